"""`python -m desk.login_link`: a new single-use login link for one more officer (token mode).

    python -m desk.login_link --database_url URL [--base http://127.0.0.1:8080] [--hours 12]

The desk prints one link at start; each link signs in one browser once (docs/desk.md,
Sessions). This adds another to the desk's database (only its SHA-256 is stored) and prints
it; every desk sharing the database accepts it, once, until it expires.
"""

import argparse
import secrets
import sys

from desk import db
from desk.security import digest
from desk.store import DeskStore, now_text


def mint(store: DeskStore, lifetime_s: float) -> str:
    """A new login token, valid once for `lifetime_s`."""
    token = secrets.token_urlsafe(24)
    store.add_login_token(digest(token), now_text(), lifetime_s)
    return token


def mint_for(config: db.DatabaseConfig, lifetime_s: float = 12 * 3600.0) -> str:
    """A new login token in the database `config` names."""
    engine = db.engine(config)
    try:
        return mint(DeskStore(engine), lifetime_s)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desk.login_link", description=__doc__)
    db.add_arguments(parser)
    parser.add_argument("--base", default="http://127.0.0.1:8080", help="The desk's address.")
    parser.add_argument("--hours", type=float, default=12.0, help="How long the link is valid.")
    args = parser.parse_args(argv)
    config = db.config_from(args)
    problem = config.check()
    if problem:
        parser.error(problem)
    token = mint_for(config, args.hours * 3600)
    print(f"{args.base.rstrip('/')}/login?token={token}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
