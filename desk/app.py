"""The desk's FastAPI application: configuration, state, security headers, error pages.

`create_app(config, services)` builds it; the routes live in `desk/routes/`, one module per
concern. Its lifespan starts what the desk runs on and stops it again: the schema brought
to the latest version (or, `--migrations check`, found there), the database pool, the
clients (`services`: the command line passes the cloud clients, tests the emulators'), the
outbox publisher and, when configured, the fines subscriber.
"""

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import RequestResponseEndpoint

from desk import db, migrate, presentation
from desk.config import DeskConfig, DeskState
from desk.ingest import FinesSubscriber
from desk.outbox import OutboxPublisher
from desk.security import IapVerifier, KeySet, PushTokenVerifier, SessionSigner
from desk.services import Services, subscription_path
from desk.store import DeskStore
from desk.workflow import Desk
from section_speed.domain.verification import REJECT_REASONS

_log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent

SECURITY_HEADERS = {
    # No inline script or style anywhere: the page's one script is /static/desk.js.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # No other origin's window keeps a handle on the desk's, and no other origin's page can
    # show a fine's photo (or load any of the desk's responses) in an <img> or a fetch.
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Only behind TLS: over plain http a browser ignores it, and the local desk is plain http.
TLS_HEADERS = {"Strict-Transport-Security": "max-age=63072000"}


def security_headers_for(request: Request) -> dict[str, str]:
    """SECURITY_HEADERS, plus HSTS when the request came over https: its own scheme, or
    X-Forwarded-Proto from a TLS-terminating front end (Cloud Run's)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if request.url.scheme == "https" or forwarded == "https":
        return SECURITY_HEADERS | TLS_HEADERS
    return SECURITY_HEADERS


def templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value renders as text, whatever it holds
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["reject_reasons"] = REJECT_REASONS
    presentation.install(environment)
    return Jinja2Templates(env=environment)


def create_app(
    config: DeskConfig,
    services: Services,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    iap_keys: Callable[[], KeySet] | None = None,
    push_certs: Callable[[], Mapping[str, str]] | None = None,
) -> FastAPI:
    from desk.routes import auth, fines, photos, push, queue

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate.at_start(config.database, config.migrations)  # NotMigrated: no start
        engine = db.engine(config.database)
        store = DeskStore(engine)
        notices = services.notices()
        warehouse = services.warehouse()
        publisher = OutboxPublisher(store, notices, warehouse)
        desk = Desk(store, services.photos(), config.bucket, config.claim_seconds, clock,
                    recorded=publisher.wake, undo_seconds=config.undo_seconds)  # fmt: skip
        subscriber = None
        if config.fines_subscription:
            path = subscription_path(config.project, config.fines_subscription)
            subscriber = FinesSubscriber(store, path)
        push_verifier = None
        if config.push_audience:
            extra = {"fetch_certs": push_certs} if push_certs is not None else {}
            push_verifier = PushTokenVerifier(
                config.push_audience, config.push_service_account, **extra
            )
        app.state.desk = DeskState(
            config=config,
            desk=desk,
            signer=SessionSigner(config.secret, lambda: clock().timestamp()),
            iap=IapVerifier(config.iap_audience, iap_keys) if config.auth == "iap" else None,
            push=push_verifier,
            templates=templates(),
        )
        publisher.start()
        if subscriber is not None:
            subscriber.start()
        try:
            yield
        finally:
            if subscriber is not None:
                subscriber.stop()
            publisher.stop()
            notices.close()
            if warehouse is not None:
                warehouse.close()
            engine.dispose()

    app = FastAPI(
        title="Verification desk",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (auth, queue, fines, photos, push):
        app.include_router(module.router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.update(security_headers_for(request))
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return message_page(request, error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        fields = sorted({".".join(str(p) for p in e["loc"][1:]) for e in error.errors()})
        return message_page(request, 422, f"invalid request: check {', '.join(fields)}")

    return app


def message_page(request: Request, status: int, message: str) -> HTMLResponse:
    state: DeskState = request.app.state.desk
    return state.templates.TemplateResponse(
        request,
        "message.html",
        {"status": status, "message": message, "reviewer": None},
        status_code=status,
    )
