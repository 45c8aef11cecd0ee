"""The desk's configuration and the state its routes share (`app.state.desk`).

Apart from desk/app.py, so that the routes' dependencies (desk/deps.py) read the state
without importing the module that imports the routes.
"""

import secrets
from dataclasses import dataclass, field
from typing import Literal

from fastapi.templating import Jinja2Templates

from desk.db import DatabaseConfig
from desk.security import SESSION_MAX_AGE_S, IapVerifier, PushTokenVerifier, SessionSigner
from desk.workflow import Desk


@dataclass(frozen=True)
class DeskConfig:
    project: str
    bucket: str
    notices_topic: str
    database: DatabaseConfig
    bq_dataset: str = ""  # the outbox's BigQuery export; "" exports nothing
    auth: Literal["token", "iap"] = "token"
    claim_seconds: float = 60.0  # a claim's lease (desk.workflow.CLAIM_SECONDS), renewed
    shift_seconds: float = SESSION_MAX_AGE_S  # a session ends this long after sign-in
    undo_seconds: float = 10.0  # a notice waits this long for an undo before it goes out
    reviewer: str | None = None  # token mode: the reviewer, instead of asking at login
    iap_audience: str = ""
    fines_subscription: str = ""  # a pull subscription on the fines topic (local ingest)
    push_audience: str = ""  # POST /push/fines: the push token's audience ...
    push_service_account: str = ""  # ... and the service account it must name
    # apply: bring the schema to the latest version at start; check: refuse to start
    # unless it is there (the login may not migrate: docs/desk.md, Deploy on Google Cloud)
    migrations: Literal["apply", "check"] = "apply"
    # The login token (token mode) and the key that signs sessions; random per start
    # unless given (several instances behind IAP must share the secret: DESK_SECRET).
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))


@dataclass
class DeskState:
    config: DeskConfig
    desk: Desk
    signer: SessionSigner
    iap: IapVerifier | None
    push: PushTokenVerifier | None
    templates: Jinja2Templates
