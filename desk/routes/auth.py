"""Login (token mode) and sign-out (docs/desk.md, Sessions).

A login token is exchanged once for a server-side session; a wrong token counts towards the
login throttle; POST /login must come from the desk's own page, as every state-changing
request. In IAP mode sign-out ends the desk session (if any) and sends the browser to IAP's
own sign-out URL, which clears IAP's cookies.
"""

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from desk.deps import PostSession, State, check_origin
from desk.forms import LoginForm
from desk.security import (
    IAP_SIGN_OUT,
    SESSION_COOKIE,
    digest,
    new_session,
    tokens_equal,
    valid_reviewer,
)

router = APIRouter()
LOGIN_WINDOW_S = 60.0
MAX_FAILURES_PER_CLIENT = 10  # wrong tokens a minute from one address, then 429
MAX_FAILURES = 100  # wrong tokens a minute from everyone together, then 429
TOKEN_LIFETIME_S = 12 * 3600.0  # a minted login link (python -m desk.login_link)


def _signed_in(request: Request, state: State, reviewer: str) -> Response:
    session = new_session(reviewer)
    assert session.session_id is not None
    store = state.desk.store
    store.start_session(digest(session.session_id), reviewer, session.csrf, state.desk.now())
    response = RedirectResponse("/queue", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        state.signer.dumps(session.session_id),
        max_age=int(state.config.shift_seconds),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _check_token(request: Request, state: State, token: str | None) -> str:
    """The token's digest when it is the desk's or a minted one; 401 (counted) if not, 429
    once too many wrong ones came in the last minute."""
    if state.iap is not None:
        raise HTTPException(404, "this desk signs in through Identity-Aware Proxy")
    store, now, client = state.desk.store, state.desk.now(), _client(request)
    mine, everyone = store.login_failures(client, now, LOGIN_WINDOW_S)
    if mine >= MAX_FAILURES_PER_CLIENT or everyone >= MAX_FAILURES:
        raise HTTPException(429, "too many wrong login links: wait a minute and try again")
    known = bool(token) and (
        tokens_equal(token, state.config.token) or store.login_token_known(digest(token), now)
    )
    if not known:
        store.add_login_failure(client, now)
        raise HTTPException(401, "wrong or missing token: open the link the desk printed")
    assert token is not None
    return digest(token)


def _exchange(request: Request, state: State, token_sha256: str, reviewer: str) -> Response:
    if not state.desk.store.use_login_token(token_sha256, reviewer, state.desk.now()):
        raise HTTPException(
            401, "this login link was used already: ask for a new one (python -m desk.login_link)"
        )
    return _signed_in(request, state, reviewer)


@router.get("/login")
def login_page(request: Request, state: State, token: str | None = None) -> Response:
    token_sha256 = _check_token(request, state, token)
    if state.config.reviewer:
        return _exchange(request, state, token_sha256, state.config.reviewer)
    return state.templates.TemplateResponse(
        request, "login.html", {"token": token, "error": None, "reviewer": None}
    )


@router.post("/login")
def login(request: Request, state: State, form: Annotated[LoginForm, Form()]) -> Response:
    check_origin(request)
    token_sha256 = _check_token(request, state, form.token)
    name = form.reviewer.strip()
    if not valid_reviewer(name):
        return state.templates.TemplateResponse(
            request,
            "login.html",
            {
                "token": form.token,
                "error": "your name: letters, digits, spaces and . _ @ ' + - (at most 64)",
                "reviewer": None,
            },
            status_code=422,
        )
    return _exchange(request, state, token_sha256, name)


@router.post("/logout")
def logout(request: Request, state: State, session: PostSession) -> Response:
    if session.session_id is not None:
        state.desk.store.revoke_session(digest(session.session_id), state.desk.now())
    if state.iap is not None:
        response: Response = RedirectResponse(IAP_SIGN_OUT, status_code=303)
    else:
        response = state.templates.TemplateResponse(
            request,
            "message.html",
            {"status": 200, "message": f"{session.reviewer} signed out", "reviewer": None},
        )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
