"""FastAPI dependencies: the desk's state and clients, the reviewer, CSRF checks."""

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from desk.config import DeskState
from desk.security import IAP_HEADER, SESSION_COOKIE, Session, digest, same_origin, tokens_equal
from desk.workflow import Desk


def desk_state(request: Request) -> DeskState:
    return request.app.state.desk


State = Annotated[DeskState, Depends(desk_state)]


def get_desk(state: State) -> Desk:
    return state.desk


def current_session(request: Request, state: State) -> Session:
    """The reviewer: from the session cookie (token login) or IAP's assertion; else 401."""
    if state.iap is not None:
        reviewer = state.iap.reviewer(request.headers.get(IAP_HEADER))
        if reviewer is None:
            raise HTTPException(401, "a valid Identity-Aware Proxy assertion is required")
        return Session(reviewer, state.signer.csrf_for(reviewer))
    session_id = state.signer.loads(request.cookies.get(SESSION_COOKIE), state.config.shift_seconds)
    found = None
    if session_id is not None:
        found = state.desk.store.live_session(
            digest(session_id), state.desk.now(), state.config.shift_seconds
        )
    if found is None:
        raise HTTPException(
            401,
            "not signed in, signed out, or your shift's session ended: open the login link "
            "the desk printed (or a new one: python -m desk.login_link)",
        )
    return Session(found[0], found[1], session_id)


CurrentSession = Annotated[Session, Depends(current_session)]


def check_origin(request: Request) -> None:
    """403 unless the request comes from the desk's own page (Origin, Sec-Fetch-Site)."""
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site not in (None, "same-origin", "none"):
        raise HTTPException(403, "cross-site request refused")
    # Under Referrer-Policy no-referrer, browsers send "Origin: null" with the page's own
    # form posts; then only their Sec-Fetch-Site: same-origin vouches for the request.
    if origin == "null":
        if fetch_site != "same-origin":
            raise HTTPException(403, "cross-origin request refused")
    elif origin is not None and not same_origin(origin, request.headers.get("host", "")):
        raise HTTPException(403, "cross-origin request refused")


async def checked_post(request: Request, session: CurrentSession) -> Session:
    """A state-changing request from the desk's own page: same origin, the session's token."""
    check_origin(request)
    form = await request.form()
    token = form.get("csrf")
    if not isinstance(token, str) or not tokens_equal(token, session.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")
    return session


PostSession = Annotated[Session, Depends(checked_post)]
DeskDep = Annotated[Desk, Depends(get_desk)]
