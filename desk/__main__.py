"""`python -m desk`: the verification desk (docs/desk.md).

    python -m desk --project P --bucket B --notices_topic T \\
        (--database_url URL | --cloudsql_instance P:R:I --database_user USER) \\
        [--migrations apply|check] \\
        [--fines_subscription S] [--bq_dataset D] [--host 127.0.0.1] [--port 8080] \\
        [--auth token|iap] [--iap_audience AUD] [--push_audience AUD \\
         --push_service_account SA] [--claim_seconds 60] [--reviewer NAME] \\
        [--shift_hours 12] [--undo_seconds 10]

Against the local stack the clients find the emulators through PUBSUB_EMULATOR_HOST,
BIGQUERY_EMULATOR_HOST and STORAGE_EMULATOR_HOST, as the pipeline's do.
"""

import argparse
import logging
import os
import sys

import uvicorn

from desk import db, migrate
from desk.app import DeskConfig, create_app
from desk.security import SESSION_MAX_AGE_S
from desk.services import cloud_services

SECRET_ENV = "DESK_SECRET"  # shared by every instance behind IAP (else random per start)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m desk", description="The verification desk: officers confirm fines."
    )
    parser.add_argument("--project", required=True, help="Google Cloud project.")
    parser.add_argument("--bucket", required=True, help="The evidence bucket (photos).")
    parser.add_argument("--notices_topic", required=True, help="Pub/Sub topic for notices.")
    db.add_arguments(parser)
    parser.add_argument(
        "--migrations",
        choices=("apply", "check"),
        default="apply",
        help="apply: bring the database to the latest schema at start (local); check: "
        "refuse to start unless it is there already (Cloud Run: the schema's owner migrates "
        "in the deploy's job, the desk's own login may not).",
    )
    parser.add_argument(
        "--bq_dataset",
        default="",
        help="BigQuery dataset the outbox exports decisions and notices to (fine_reviews, "
        "notices), for the analyst report; empty: no export.",
    )
    parser.add_argument(
        "--fines_subscription",
        default="",
        help="A pull subscription on the pipeline's output topic: the desk ingests fines "
        "from it (local). On Cloud Run use a push subscription to /push/fines instead.",
    )
    parser.add_argument(
        "--push_audience",
        default="",
        help="POST /push/fines: the audience of the push subscription's OIDC token.",
    )
    parser.add_argument(
        "--push_service_account",
        default="",
        help="POST /push/fines: the service account the push token must name.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
    parser.add_argument("--port", type=int, default=8080, help="Port to listen on.")
    parser.add_argument(
        "--auth",
        choices=("token", "iap"),
        default="token",
        help="token: a login link printed at start (local); iap: behind Identity-Aware Proxy.",
    )
    parser.add_argument(
        "--claim_seconds",
        type=float,
        default=60.0,
        help="A claim's lease: the open page renews it every third of it; a page left "
        "releases it, a closed laptop's runs out after it.",
    )
    parser.add_argument(
        "--shift_hours",
        type=float,
        default=SESSION_MAX_AGE_S / 3600,
        help="A session ends this many hours after sign-in (one shift).",
    )
    parser.add_argument(
        "--undo_seconds",
        type=float,
        default=10.0,
        help="How long a decision can be undone; its notice is issued only after it.",
    )
    parser.add_argument("--reviewer", help="token mode: the reviewer's name (else asked).")
    parser.add_argument(
        "--iap_audience",
        default="",
        help="iap mode: the audience of IAP's signed header. Cloud Run with IAP on the "
        "service: /projects/PROJECT_NUMBER/locations/REGION/services/SERVICE; behind a load "
        "balancer: /projects/PROJECT_NUMBER/global/backendServices/BACKEND_SERVICE_ID.",
    )
    return parser


def config_from(args: argparse.Namespace) -> DeskConfig:
    secret = os.environ.get(SECRET_ENV)
    extra = {"secret": secret.encode("utf-8")} if secret else {}
    return DeskConfig(
        project=args.project,
        bucket=args.bucket,
        notices_topic=args.notices_topic,
        database=db.config_from(args),
        migrations=args.migrations,
        bq_dataset=args.bq_dataset,
        auth=args.auth,
        claim_seconds=args.claim_seconds,
        shift_seconds=args.shift_hours * 3600,
        undo_seconds=args.undo_seconds,
        reviewer=args.reviewer,
        iap_audience=args.iap_audience,
        fines_subscription=args.fines_subscription,
        push_audience=args.push_audience,
        push_service_account=args.push_service_account,
        **extra,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.auth == "iap" and not args.iap_audience:
        parser.error("--auth iap needs --iap_audience")
    if bool(args.push_audience) != bool(args.push_service_account):
        parser.error("--push_audience and --push_service_account go together")
    config = config_from(args)
    problem = config.database.check()
    if problem:
        parser.error(problem)
    if config.migrations == "check":
        # Refused here in one line of the service's log, not in a traceback of the server's
        # start (the app's lifespan checks again: tests and the demo start it directly).
        try:
            migrate.at_start(config.database, "check")
        except migrate.NotMigrated as refused:
            print(f"desk: {refused}", file=sys.stderr, flush=True)
            return 1
    services = cloud_services(args.project, args.bq_dataset, args.bucket, args.notices_topic)
    app = create_app(config, services)
    if config.auth == "token":
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(f"desk: open http://{host}:{args.port}/login?token={config.token}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
