"""Thumbnails of the fines' photos, fetched from the evidence bucket (gs:// URLs)."""

import io
import logging
from collections.abc import Callable
from typing import Any

from google.api_core.exceptions import GoogleAPIError
from google.auth.exceptions import GoogleAuthError
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

_log = logging.getLogger(__name__)

PhotoSource = Callable[[str], bytes | None]  # gs:// URL -> JPEG thumbnail, or None
THUMBNAIL_PX = (160, 120)


def fetch_photo(image_url: str, client: Any) -> bytes | None:
    """The object at gs://BUCKET/NAME, or None when it can't be fetched (logged).

    `client` is a google.cloud.storage.Client (it honours STORAGE_EMULATOR_HOST).
    """
    if not image_url.startswith("gs://"):
        return None
    bucket, _, name = image_url.removeprefix("gs://").partition("/")
    if not bucket or not name:
        return None
    try:
        return client.bucket(bucket).blob(name).download_as_bytes(timeout=10, retry=None)
    except (GoogleAPIError, GoogleAuthError, InvalidResponse, DataCorruption, OSError) as error:
        _log.warning("photo %s not fetched: %s", image_url, error)
        return None


def make_thumbnail(image: bytes) -> bytes | None:
    """A JPEG at most THUMBNAIL_PX, or None when the bytes are not an image."""
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib

    try:
        with Image.open(io.BytesIO(image)) as picture:
            picture.thumbnail(THUMBNAIL_PX)
            buffer = io.BytesIO()
            picture.convert("RGB").save(buffer, format="JPEG", quality=80)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        _log.warning("photo is not an image: %s", error)
        return None
    return buffer.getvalue()


class StoragePhotos:
    """Thumbnails of gs:// photos; one storage client, made on the first photo."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._client: Any = None
        self._unavailable = False

    def __call__(self, image_url: str) -> bytes | None:
        if self._unavailable:
            return None
        if self._client is None:
            try:
                self._client = storage.Client(project=self.project)
            except (GoogleAuthError, GoogleAPIError, OSError) as error:
                _log.warning("no Cloud Storage client, photos left out: %s", error)
                self._unavailable = True
                return None
        image = fetch_photo(image_url, self._client)
        return make_thumbnail(image) if image is not None else None
