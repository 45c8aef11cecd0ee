"""Login (token mode) and logout. IAP mode needs neither: IAP signs every request."""

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from desk.deps import PostSession, State
from desk.forms import LoginForm
from desk.security import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    new_session,
    tokens_equal,
    valid_reviewer,
)

router = APIRouter()


def _signed_in(request: Request, state: State, reviewer: str) -> Response:
    response = RedirectResponse("/queue", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        state.signer.dumps(new_session(reviewer)),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def _check_token(state: State, token: str | None) -> None:
    if state.iap is not None:
        raise HTTPException(404, "this desk signs in through Identity-Aware Proxy")
    if not tokens_equal(token, state.config.token):
        raise HTTPException(401, "wrong or missing token: open the link the desk printed")


@router.get("/login")
def login_page(request: Request, state: State, token: str | None = None) -> Response:
    _check_token(state, token)
    if state.config.reviewer:
        return _signed_in(request, state, state.config.reviewer)
    return state.templates.TemplateResponse(
        request, "login.html", {"token": token, "error": None, "reviewer": None}
    )


@router.post("/login")
def login(request: Request, state: State, form: Annotated[LoginForm, Form()]) -> Response:
    _check_token(state, form.token)
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
    return _signed_in(request, state, name)


@router.post("/logout")
def logout(request: Request, state: State, session: PostSession) -> Response:
    response = state.templates.TemplateResponse(
        request,
        "message.html",
        {"status": 200, "message": f"{session.reviewer} signed out", "reviewer": None},
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
