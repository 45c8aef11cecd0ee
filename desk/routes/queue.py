"""The queue: fines awaiting a decision, oldest first, and "next" (claim and open one)."""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from desk.deps import CurrentSession, DeskDep, PostSession, State
from desk.forms import CsrfForm, QueueParams
from desk.routes.fines import last_decision

router = APIRouter()
QUEUE_PAGE = 200


@router.get("/")
def home() -> Response:
    return RedirectResponse("/queue", status_code=303)


@router.get("/queue")
def queue_page(
    request: Request,
    state: State,
    desk: DeskDep,
    session: CurrentSession,
    params: Annotated[QueueParams, Query()],
) -> Response:
    entries = desk.queue(params.queue_filter(), QUEUE_PAGE)
    return state.templates.TemplateResponse(
        request,
        "queue.html",
        {
            "rows": [(entry, entry.holder) for entry in entries],
            "params": params,
            "reviewer": session.reviewer,
            "csrf": session.csrf,
            "last": last_decision(state, session),
        },
    )


@router.post("/next")
def next_fine(desk: DeskDep, session: PostSession, form: Annotated[CsrfForm, Form()]) -> Response:
    fine_id = desk.next_fine(session.reviewer, form.queue_filter())
    target = f"/fines/{fine_id}" if fine_id else "/queue"
    return RedirectResponse(target + form.query_string(), status_code=303)
