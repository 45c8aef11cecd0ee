"""How the embedded reader cuts a text box out of a photo: levelled, grown, contrast evened.

The crops of one box are the several views `merge_views` compares (embedded_ocr.py).
"""

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

EDGE_MARGIN = 0.01  # of the photo's shorter side: a box this close to the edge is not read


@dataclass(frozen=True, slots=True)
class Crop:
    """How a text box is cut out: grown by fractions of its height, contrast evened or not."""

    grow_x: float
    grow_y: float
    even_contrast: bool = False


# Tight (the plate's frame and state name cut away) with local contrast, then wider (a
# character the box cut off comes back), then as detected.
CROPS = (Crop(0.0, -0.12, even_contrast=True), Crop(0.15, 0.0), Crop(0.0, 0.0))
# Read when the crops agree on a plate but are not sure enough of it: more views of the same
# characters, far cheaper than detecting again.
EXTRA_CROPS = (Crop(0.1, -0.08, even_contrast=True), Crop(0.25, 0.05))
# Read once the crops agree on a plate: far wider, so that a character the box cut off, or
# a plate graphic read as one, shows as a plate of another length and refuses the reading.
CONTEXT_CROP = Crop(0.6, 0.0)


def box_size(box: np.ndarray) -> tuple[float, float]:
    """A text box's width (along the text) and height, in pixels."""
    corners = np.asarray(box, dtype=np.float64)
    width = max(vector_length(corners[1] - corners[0]), vector_length(corners[2] - corners[3]))
    height = max(vector_length(corners[3] - corners[0]), vector_length(corners[2] - corners[1]))
    return width, height


def cut_box(bgr: np.ndarray, box: np.ndarray, crop: Crop, contrast: Any = None) -> np.ndarray:
    """A text box cut out, levelled and grown by `crop` (edges repeat past the photo)."""
    corners = np.asarray(box, dtype=np.float64)
    width, height = box_size(corners)
    across = (corners[1] - corners[0]) / max(vector_length(corners[1] - corners[0]), 1e-6)
    down = (corners[3] - corners[0]) / max(vector_length(corners[3] - corners[0]), 1e-6)
    grow_x, grow_y = across * crop.grow_x * height, down * crop.grow_y * height
    source = np.float32(
        [
            corners[0] - grow_x - grow_y,
            corners[1] + grow_x - grow_y,
            corners[2] + grow_x + grow_y,
            corners[3] - grow_x + grow_y,
        ]
    )
    out_width = max(1, round(width + 2 * crop.grow_x * height))
    out_height = max(1, round(height + 2 * crop.grow_y * height))
    target = np.float32([(0, 0), (out_width, 0), (out_width, out_height), (0, out_height)])
    matrix = cv2.getPerspectiveTransform(source, target)
    line = cv2.warpPerspective(
        bgr, matrix, (out_width, out_height), flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    if crop.even_contrast and contrast is not None:
        gray = contrast.apply(cv2.cvtColor(line, cv2.COLOR_BGR2GRAY))
        line = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return line


def box_contains(outer: np.ndarray, inner: np.ndarray) -> bool:
    """Whether `inner`'s centre lies within `outer`'s bounds: the same text, found again."""
    (left, top), (right, bottom) = outer.min(axis=0), outer.max(axis=0)
    x, y = inner.mean(axis=0)
    return bool(left <= x <= right and top <= y <= bottom)


def touches_edge(box: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether a box reaches the photo's edge, where the frame may have cut characters off."""
    margin = EDGE_MARGIN * min(shape[:2])
    (left, top), (right, bottom) = box.min(axis=0), box.max(axis=0)
    return bool(
        left < margin or top < margin or right > shape[1] - margin or bottom > shape[0] - margin
    )


def vector_length(vector: np.ndarray) -> float:
    return float(np.hypot(vector[0], vector[1]))
