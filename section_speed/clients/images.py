"""Checking photo bytes before anything decodes them in full.

A photo comes from a service we do not control: its size is bounded before decoding and
Pillow's decompression-bomb limit stays on, so a hostile or broken image costs a reason
in the dead letter, never a worker's memory.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # about 7300 x 5400; Pillow raises beyond twice this
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG"})

# Pillow warns above MAX_IMAGE_PIXELS and raises DecompressionBombError above twice it.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class InvalidImage(ValueError):
    """The bytes are not a photo we accept; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    width: int
    height: int
    content_type: str


def check_image(data: bytes, max_bytes: int = MAX_IMAGE_BYTES) -> ImageInfo:
    """Validate `data` as a JPEG or PNG photo of bounded size, reading only its header."""
    if not data:
        raise InvalidImage("empty image body")
    if len(data) > max_bytes:
        raise InvalidImage(f"image of {len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = ImageInfo(
                image.format or "",
                image.width,
                image.height,
                Image.MIME.get(image.format or "", "application/octet-stream"),
            )
            if info.format not in ACCEPTED_FORMATS:
                raise InvalidImage(f"image format {info.format or 'unknown'} is not JPEG/PNG")
            if info.width * info.height > MAX_IMAGE_PIXELS:
                raise InvalidImage(
                    f"image of {info.width}x{info.height} pixels is over the "
                    f"{MAX_IMAGE_PIXELS}-pixel limit"
                )
            image.verify()  # walks the data without keeping pixels: catches truncation
    except InvalidImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise InvalidImage(f"not a decodable image: {error}") from error
    return info


def decode_rgb(data: bytes, max_bytes: int = MAX_IMAGE_BYTES) -> np.ndarray:
    """The photo as an RGB array (height, width, 3), after `check_image`'s bounds."""
    check_image(data, max_bytes)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (Image.DecompressionBombError, OSError) as error:
        raise InvalidImage(f"not a decodable image: {error}") from error
