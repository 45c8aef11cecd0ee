"""Debian's Chromium for the desk's browser checks, and an ASGI app served on loopback.

Used by the desk's browser tests and its benchmark, so that each starts Chromium and the
desk the same way.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from local_stack.processes import free_port, wait_until

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/bootstrap.sh installs it)
# --no-sandbox: the tests run as root. Without the other flags Chromium keeps calling
# Google's services at start, which a machine without that network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextmanager
def served(app: Any, what: str = "the desk") -> Iterator[str]:
    """`app` under uvicorn on a free 127.0.0.1 port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=30, what=f"{what} to listen")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        if thread.is_alive():
            raise RuntimeError(f"{what} did not stop")
