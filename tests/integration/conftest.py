"""One local stack (real Pub/Sub emulator) per test session, stopped at the end."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from local_stack.services import LocalStack

if TYPE_CHECKING:
    from tests.integration.desk_site import DeskSite


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    # A missing emulator fails here with ServiceUnavailable saying how to install it.
    with LocalStack() as local_stack:
        local_stack.apply_env()
        yield local_stack


@pytest.fixture(scope="module")
def desk_site(stack: LocalStack, request: pytest.FixtureRequest) -> Iterator["DeskSite"]:
    """The desk on the stack, one dataset per test module (tests/integration/desk_site.py)."""
    from tests.integration.desk_site import serve_desk

    dataset = "it_" + request.module.__name__.rsplit(".", 1)[-1]
    with serve_desk(stack, dataset) as site:
        yield site


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's Chromium under Playwright (local_stack/browser.py), closed at the end."""
    from playwright.sync_api import sync_playwright

    from local_stack.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
