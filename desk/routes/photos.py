"""Photos, served only by fine id: the fine's own stored photo in the evidence bucket."""

import io

from fastapi import APIRouter, HTTPException, Path, Response
from PIL import Image

from desk.deps import CurrentSession, DeskDep
from desk.forms import FINE_ID_PATTERN
from desk.workflow import FineNotFound, FineView
from section_speed.clients.images import InvalidImage, check_image
from section_speed.domain.plate_reading import parse_plate_box_text

router = APIRouter()
FINE_ID = Path(pattern=FINE_ID_PATTERN)
PLATE_WIDTH = 480  # the enlarged plate region, pixels
PLATE_MARGIN = 0.25  # of the box's size, on each side: the plate's surroundings help


def _photo(fine_id: str, desk: DeskDep) -> tuple[bytes, str, FineView]:
    """The fine's stored photo, checked as the record's evidence: bytes, type, the view."""
    try:
        view = desk.view(fine_id)
    except FineNotFound as error:
        raise HTTPException(404, "no such fine") from error
    data = view.photo.data
    if data is None:
        raise HTTPException(404, "photo missing")
    if not view.photo.verified:
        raise HTTPException(409, "the stored photo is not the one the record's sha256 names")
    try:
        info = check_image(data)
    except InvalidImage as error:
        raise HTTPException(404, f"photo unusable: {error}") from error
    return data, info.content_type, view


@router.get("/fines/{fine_id}/photo")
def photo(desk: DeskDep, session: CurrentSession, fine_id: str = FINE_ID) -> Response:
    data, content_type, _ = _photo(fine_id, desk)
    return Response(data, media_type=content_type)


@router.get("/fines/{fine_id}/plate")
def plate(desk: DeskDep, session: CurrentSession, fine_id: str = FINE_ID) -> Response:
    data, _, view = _photo(fine_id, desk)
    box = parse_plate_box_text(view.fine.plate_box)
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
