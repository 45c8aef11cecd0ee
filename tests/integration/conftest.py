"""One local stack (real Pub/Sub emulator) per test session, stopped at the end."""

from collections.abc import Iterator

import pytest

from local_stack.services import LocalStack


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    # A missing emulator fails here with ServiceUnavailable saying how to install it.
    with LocalStack() as local_stack:
        local_stack.apply_env()
        yield local_stack
