"""One fine per screen, and the decisions on it."""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from desk.deps import CurrentSession, DeskDep, PhotosDep, PostSession, State
from desk.forms import CsrfForm, DecisionForm, QueueParams
from desk.routes.photos import plate_box
from desk.security import Session
from desk.services import photo_matches_record, stored_photo
from desk.store import latest_revision
from desk.workflow import (
    PLATE,
    Decision,
    DecisionConflict,
    FineNotFound,
    FineView,
    InvalidDecision,
)
from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE
from section_speed.domain.plate_gates import character_gate

router = APIRouter()
FINE_ID = Path(pattern=r"^[0-9a-f]{32}$")
MAX_CANDIDATES = 9  # Shift+1 .. Shift+9


def _view(desk: DeskDep, fine_id: str) -> FineView:
    try:
        return desk.view(fine_id)
    except FineNotFound as error:
        raise HTTPException(404, "no such fine") from error


@dataclass(frozen=True)
class Candidate:
    """A plate the reader offers, each character with whether it is doubtful."""

    plate: str
    characters: list[tuple[str, bool]]


def candidates(fine: dict[str, Any]) -> list[Candidate]:
    """The reader's ranked plates, when the fines table has them, with the characters read
    under the reader's gate (docs/plates.md) marked doubtful."""
    found = fine.get("plate_candidates")
    if not isinstance(found, list):
        return []
    confidences = fine.get("plate_candidate_confidences") or []
    shown = []
    for index, plate in enumerate(str(c) for c in found[:MAX_CANDIDATES] if c):
        values = _confidences(confidences[index] if index < len(confidences) else None)
        if len(values) != len(plate):  # unknown: every character is for the officer to judge
            values = [0.0] * len(plate)
        doubtful = [value < character_gate(char, PLATE_MIN_CONFIDENCE) for char, value
                    in zip(plate, values, strict=True)]  # fmt: skip
        shown.append(Candidate(plate, list(zip(plate, doubtful, strict=True))))
    return shown


def _confidences(text: object) -> list[float]:
    try:
        return [float(part) for part in str(text).split(",")] if text else []
    except ValueError:
        return []


def render_fine(
    request: Request,
    state: State,
    photos: PhotosDep,
    view: FineView,
    session: Session,
    params: QueueParams,
    error: str | None = None,
    status: int = 200,
    typed_plate: str | None = None,
) -> Response:
    fine = view.fine
    data = stored_photo(fine, state.config.bucket, photos)
    has_photo = data is not None and photo_matches_record(fine, data)
    photo_mismatch = data is not None and not has_photo
    shown_plate = fine.get("license_plate") or ""
    mine = view.holder is not None and view.holder["reviewer"] == session.reviewer
    return state.templates.TemplateResponse(
        request,
        "fine.html",
        {
            "view": view,
            "fine": fine,
            "mine": mine,
            "has_photo": has_photo,
            "photo_mismatch": photo_mismatch,
            "has_plate_box": has_photo and plate_box(fine) is not None,
            "candidates": candidates(fine),
            "plate_value": shown_plate if typed_plate is None else typed_plate,
            "params": params,
            "reviewer": session.reviewer,
            "csrf": session.csrf,
            "error": error,
        },
        status_code=status,
    )


def _photo_verified(desk: DeskDep, photos: PhotosDep, state: State, fine_id: str) -> bool:
    """The fine's photo is stored and is the one its image_sha256 names."""
    fine = latest_revision(desk.store.fine_revisions(fine_id))
    data = None if fine is None else stored_photo(fine, state.config.bucket, photos)
    return data is not None and photo_matches_record(fine, data)


@router.get("/fines/{fine_id}")
def fine_page(
    request: Request,
    state: State,
    desk: DeskDep,
    photos: PhotosDep,
    session: CurrentSession,
    params: Annotated[QueueParams, Query()],
    fine_id: str = FINE_ID,
) -> Response:
    return render_fine(request, state, photos, _view(desk, fine_id), session, params)


@router.post("/fines/{fine_id}/claim")
def claim(
    desk: DeskDep,
    session: PostSession,
    form: Annotated[CsrfForm, Form()],
    fine_id: str = FINE_ID,
) -> Response:
    view = _view(desk, fine_id)
    if view.state is None:
        raise HTTPException(409, "this fine awaits no decision")
    holder = view.holder
    if holder is not None and holder["reviewer"] != session.reviewer:
        raise HTTPException(409, f"taken by {holder['reviewer']}")
    if holder is None:
        holder = desk.claim(view.fine, session.reviewer)
        if holder is not None and holder["reviewer"] != session.reviewer:
            raise HTTPException(409, f"taken by {holder['reviewer']}")
    return RedirectResponse(f"/fines/{fine_id}{form.query_string()}", status_code=303)


@router.post("/fines/{fine_id}/decision")
def decide(
    request: Request,
    state: State,
    desk: DeskDep,
    photos: PhotosDep,
    session: PostSession,
    form: Annotated[DecisionForm, Form()],
    fine_id: str = FINE_ID,
) -> Response:
    decision = Decision(fine_id, form.revision, form.claim_id, form.action, form.plate, form.note)
    if form.action == PLATE and not _photo_verified(desk, photos, state, fine_id):
        view = _view(desk, fine_id)
        problem = "a plate is confirmed only against the record's own photo: reject this fine"
        return render_fine(request, state, photos, view, session, form, problem, 422, form.plate)
    try:
        desk.decide(session.reviewer, decision)
    except FineNotFound as error:
        raise HTTPException(404, "no such fine") from error
    except DecisionConflict as error:
        raise HTTPException(409, f"{error}: back to the queue") from error
    except InvalidDecision as error:
        view = _view(desk, fine_id)
        return render_fine(request, state, photos, view, session, form, str(error), 422, form.plate)
    next_id = desk.next_fine(session.reviewer, form.queue_filter())
    target = f"/fines/{next_id}" if next_id else "/queue"
    return RedirectResponse(target + form.query_string(), status_code=303)
