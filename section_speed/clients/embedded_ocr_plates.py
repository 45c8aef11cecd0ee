"""An optional plate detector for the embedded reader: a one-class YOLOv8 model on onnxruntime.

None ships with the project (docs/plates.md says why); given one, the reader looks for
text in its plates before the whole photo.
"""

import cv2
import numpy as np

# A plate detector's boxes: those scoring at least this, at most this many, best first.
PLATE_MIN_SCORE, MAX_PLATES = 0.25, 3
PLATE_NMS_IOU = 0.45


class PlateDetector:
    """A one-class YOLOv8 plate detector exported to ONNX, on onnxruntime.

    The model takes a letterboxed RGB square (its input's side) scaled to 0..1 and gives,
    per anchor, the box centre, size and plate score (any further channels, such as a
    segmentation model's mask coefficients, are ignored). `detect` gives the plates' boxes
    in the photo's pixels, best first, after non-maximum suppression.
    """

    def __init__(self, model: bytes, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self._session = onnxruntime.InferenceSession(
            model, options, providers=["CPUExecutionProvider"]
        )
        first = self._session.get_inputs()[0]
        self._side = int(first.shape[-1])
        self._dtype = np.float16 if "float16" in first.type else np.float32
        self._input = first.name

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """(4 corners clockwise from top-left, score) per plate, best first."""
        height, width = rgb.shape[:2]
        scale = self._side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        square = np.full((self._side, self._side, 3), 114, np.uint8)
        left, top = (self._side - size[0]) // 2, (self._side - size[1]) // 2
        resized = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        square[top : top + size[1], left : left + size[0]] = resized
        batch = (square.transpose(2, 0, 1)[np.newaxis] / 255.0).astype(self._dtype)
        output = self._session.run(None, {self._input: batch})[0][0].astype(np.float32)
        return plate_boxes(output, scale, (left, top), (width, height))


def plate_boxes(
    output: np.ndarray, scale: float, offset: tuple[int, int], photo: tuple[int, int]
) -> list[tuple[np.ndarray, float]]:
    """A YOLOv8 detector's output (channels x anchors: centre x, y, width, height, score,
    ...) as plate boxes in the photo's pixels, best first: the letterbox's `scale` and
    `offset` undone, clipped to the photo's (width, height), overlaps suppressed."""
    centre_x, centre_y, box_w, box_h, scores = output[:5]
    keep = scores >= PLATE_MIN_SCORE
    rects = [
        [float(x - w / 2), float(y - h / 2), float(w), float(h)]
        for x, y, w, h in zip(centre_x[keep], centre_y[keep], box_w[keep], box_h[keep], strict=True)
    ]
    kept_scores = [float(score) for score in scores[keep]]
    chosen = cv2.dnn.NMSBoxes(rects, kept_scores, PLATE_MIN_SCORE, PLATE_NMS_IOU)
    plates = []
    for index in np.asarray(chosen, dtype=int).flatten()[:MAX_PLATES]:
        x, y, w, h = rects[index]
        x0, y0 = (x - offset[0]) / scale, (y - offset[1]) / scale
        x1, y1 = min(float(photo[0]), x0 + w / scale), min(float(photo[1]), y0 + h / scale)
        x0, y0 = max(0.0, x0), max(0.0, y0)
        corners = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)
        plates.append((corners, kept_scores[index]))
    return plates
