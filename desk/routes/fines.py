"""One fine per screen, and the decisions on it. The routes call the workflow only."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from desk.deps import CurrentSession, DeskDep, PostSession, State
from desk.forms import FINE_ID_PATTERN, ClaimForm, CsrfForm, DecisionForm, QueueParams
from desk.security import Session
from desk.store import Fine, LastDecision, parse_time, text_time
from desk.workflow import (
    Decision,
    DecisionConflict,
    FineNotFound,
    FineView,
    InvalidDecision,
    UndoRefused,
)
from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE
from section_speed.domain.plate_gates import character_gate
from section_speed.domain.plate_reading import parse_confidences_text, parse_plate_box_text

router = APIRouter()
FINE_ID = Path(pattern=FINE_ID_PATTERN)
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


def candidates(fine: Fine) -> list[Candidate]:
    """The reader's ranked plates, with the characters read under the reader's gate
    (docs/plates.md) marked doubtful."""
    confidences = fine.plate_candidate_confidences
    shown = []
    for index, plate in enumerate(c for c in fine.plate_candidates[:MAX_CANDIDATES] if c):
        values = parse_confidences_text(confidences[index] if index < len(confidences) else None)
        if len(values) != len(plate):  # unknown: every character is for the officer to judge
            values = [0.0] * len(plate)
        doubtful = [value < character_gate(char, PLATE_MIN_CONFIDENCE) for char, value
                    in zip(plate, values, strict=True)]  # fmt: skip
        shown.append(Candidate(plate, list(zip(plate, doubtful, strict=True))))
    return shown


def render_fine(
    request: Request,
    state: State,
    view: FineView,
    session: Session,
    params: QueueParams,
    error: str | None = None,
    status: int = 200,
    typed_plate: str | None = None,
) -> Response:
    fine = view.fine
    mine = view.holder is not None and view.holder.reviewer == session.reviewer
    served_at = None
    if mine:
        served_at = state.desk.serve(view, session.reviewer)
        state.desk.warm_next(session.reviewer, params.queue_filter(), fine.fine_id)
    return state.templates.TemplateResponse(
        request,
        "fine.html",
        {
            "view": view,
            "fine": fine,
            "served_at": served_at or "",
            "mine": mine,
            "has_photo": view.photo.verified,
            "photo_mismatch": view.photo.mismatch,
            "has_plate_box": view.photo.verified
            and parse_plate_box_text(fine.plate_box) is not None,
            "candidates": candidates(fine),
            "plate_value": (fine.license_plate or "") if typed_plate is None else typed_plate,
            "params": params,
            "reviewer": session.reviewer,
            "csrf": session.csrf,
            "error": error,
            "last": last_decision(state, session),
            "renew_ms": int(state.config.claim_seconds * 1000 / 3),
        },
        status_code=status,
    )


def last_decision(state: State, session: Session) -> LastDecision | None:
    """The banner's decision: the officer's latest this shift."""
    return state.desk.last_decision(session.reviewer, state.config.shift_seconds)


@router.get("/fines/{fine_id}")
def fine_page(
    request: Request,
    state: State,
    desk: DeskDep,
    session: CurrentSession,
    params: Annotated[QueueParams, Query()],
    fine_id: str = FINE_ID,
) -> Response:
    return render_fine(request, state, _view(desk, fine_id), session, params)


@router.post("/fines/{fine_id}/claim")
def claim(
    desk: DeskDep,
    session: PostSession,
    form: Annotated[CsrfForm, Form()],
    fine_id: str = FINE_ID,
) -> Response:
    try:
        desk.claim(fine_id, session.reviewer)
    except FineNotFound as error:
        raise HTTPException(404, "no such fine") from error
    except DecisionConflict as error:
        raise HTTPException(409, str(error)) from error
    return RedirectResponse(f"/fines/{fine_id}{form.query_string()}", status_code=303)


@router.post("/fines/{fine_id}/claim/renew")
def renew_claim(
    desk: DeskDep,
    session: PostSession,
    form: Annotated[ClaimForm, Form()],
    fine_id: str = FINE_ID,
) -> Response:
    """The page is still open: another lease (204), or 409 when the claim has ended."""
    try:
        desk.renew(fine_id, form.claim_id, session.reviewer)
    except DecisionConflict as error:
        raise HTTPException(409, str(error)) from error
    return Response(status_code=204)


@router.post("/fines/{fine_id}/claim/release")
def release_claim(
    desk: DeskDep,
    session: PostSession,
    form: Annotated[ClaimForm, Form()],
    fine_id: str = FINE_ID,
) -> Response:
    """The page was left (navigator.sendBeacon on pagehide): the fine is free at once."""
    served_at = None
    if form.served_at:
        try:
            served_at = text_time(parse_time(form.served_at))
        except ValueError as error:
            raise HTTPException(422, "served_at is no time") from error
    desk.release(fine_id, form.claim_id, session.reviewer, served_at)
    return Response(status_code=204)


@router.post("/fines/{fine_id}/decision")
def decide(
    request: Request,
    state: State,
    desk: DeskDep,
    session: PostSession,
    form: Annotated[DecisionForm, Form()],
    fine_id: str = FINE_ID,
) -> Response:
    decision = Decision(fine_id, form.revision, form.claim_id, form.action, form.plate,
                        form.note, form.photo_sha256 or "")  # fmt: skip
    try:
        desk.decide(session.reviewer, decision)
    except FineNotFound as error:
        raise HTTPException(404, "no such fine") from error
    except DecisionConflict as error:
        raise HTTPException(409, f"{error}: back to the queue") from error
    except InvalidDecision as error:
        view = _view(desk, fine_id)
        return render_fine(request, state, view, session, form, str(error), 422, form.plate)
    next_id = desk.next_fine(session.reviewer, form.queue_filter())
    target = f"/fines/{next_id}" if next_id else "/queue"
    return RedirectResponse(target + form.query_string(), status_code=303)


@router.post("/decisions/{review_id}/undo")
def undo(
    desk: DeskDep,
    session: PostSession,
    form: Annotated[CsrfForm, Form()],
    review_id: str = Path(pattern=FINE_ID_PATTERN),
) -> Response:
    """Undo inside the window: nothing is issued, and the fine is the officer's again."""
    try:
        fine_id = desk.undo(session.reviewer, review_id)
    except UndoRefused as error:
        raise HTTPException(409, f"cannot undo: {error}") from error
    return RedirectResponse(f"/fines/{fine_id}{form.query_string()}", status_code=303)
