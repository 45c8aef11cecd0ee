"""Photos, served only by fine id: the fine's own stored photo in the evidence bucket."""

import io

from fastapi import APIRouter, HTTPException, Path, Response
from PIL import Image

from desk.deps import CurrentSession, DeskDep, PhotosDep, State
from desk.services import photo_matches_record, stored_photo
from desk.store import latest_revision
from section_speed.clients.images import InvalidImage, check_image

router = APIRouter()
FINE_ID = Path(pattern=r"^[0-9a-f]{32}$")
PLATE_WIDTH = 480  # the enlarged plate region, pixels
PLATE_MARGIN = 0.25  # of the box's size, on each side: the plate's surroundings help


def _photo(fine_id: str, state: State, desk: DeskDep, photos: PhotosDep) -> tuple[bytes, str, dict]:
    """The fine's stored photo, checked as the record's evidence: bytes, type, the fine."""
    fine = latest_revision(desk.store.fine_revisions(fine_id))
    if fine is None:
        raise HTTPException(404, "no such fine")
    data = stored_photo(fine, state.config.bucket, photos)
    if data is None:
        raise HTTPException(404, "photo missing")
    if not photo_matches_record(fine, data):
        raise HTTPException(409, "the stored photo is not the one the record's sha256 names")
    try:
        info = check_image(data)
    except InvalidImage as error:
        raise HTTPException(404, f"photo unusable: {error}") from error
    return data, info.content_type, fine


@router.get("/fines/{fine_id}/photo")
def photo(
    state: State,
    desk: DeskDep,
    photos: PhotosDep,
    session: CurrentSession,
    fine_id: str = FINE_ID,
) -> Response:
    data, content_type, _ = _photo(fine_id, state, desk, photos)
    return Response(data, media_type=content_type)


def plate_box(fine: dict) -> tuple[float, float, float, float] | None:
    """The reader's plate region, "x0,y0,x1,y1" in the photo's pixels, when known."""
    text = fine.get("plate_box")
    if not isinstance(text, str):
        return None
    try:
        x0, y0, x1, y1 = (float(part) for part in text.split(","))
    except ValueError:
        return None
    return (x0, y0, x1, y1) if x1 > x0 >= 0 and y1 > y0 >= 0 else None


@router.get("/fines/{fine_id}/plate")
def plate(
    state: State,
    desk: DeskDep,
    photos: PhotosDep,
    session: CurrentSession,
    fine_id: str = FINE_ID,
) -> Response:
    data, _, fine = _photo(fine_id, state, desk, photos)
    box = plate_box(fine)
    if box is None:
        raise HTTPException(404, "no plate region")
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * PLATE_MARGIN, (y1 - y0) * PLATE_MARGIN
    with Image.open(io.BytesIO(data)) as image:
        region = (
            max(0, round(x0 - dx)),
            max(0, round(y0 - dy)),
            min(image.width, round(x1 + dx)),
            min(image.height, round(y1 + dy)),
        )
        if region[2] <= region[0] or region[3] <= region[1]:
            raise HTTPException(404, "plate region outside the photo")
        crop = image.convert("RGB").crop(region)
    height = max(1, round(crop.height * PLATE_WIDTH / crop.width))
    out = io.BytesIO()
    crop.resize((PLATE_WIDTH, height), Image.Resampling.LANCZOS).save(out, "JPEG", quality=90)
    return Response(out.getvalue(), media_type="image/jpeg")
