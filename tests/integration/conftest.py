"""One local stack (real Pub/Sub emulator) per test session, stopped at the end."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from local_stack.services import LocalStack

if TYPE_CHECKING:
    from tests.integration.desk_site import DeskSite


# `make test` runs this folder on two workers (pytest-xdist, --dist loadgroup). Streaming
# pipelines on the local runner share one worker, one at a time, as they always have: each
# drives a real-time pipeline whose own test asserts exact outputs. Everything else (the
# desk, the report, the warehouse, replay, plate readers, start-up checks: services and
# browsers, no live pipeline) runs beside them on the other worker.
STREAMING_PIPELINE_MODULES = {
    "test_course_traffic",
    "test_course_under_load",
    "test_end_to_end",
    "test_evidence",
    "test_faults",
    "test_limits_live",
    "test_restart",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        group = "streaming" if module in STREAMING_PIPELINE_MODULES else "services"
        item.add_marker(pytest.mark.xdist_group(group))


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
