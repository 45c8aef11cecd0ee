"""Claims last while the fine is on screen (docs/desk.md, Claims), in Chromium: the open
page renews its short lease, leaving the page releases the claim at once (another officer
gets the fine), and an abandoned page's claim (a closed laptop: offline) runs out after
the lease. The desk runs with a 3 s lease, so the page renews every second."""

from collections.abc import Iterator

import pytest

from local_stack.processes import wait_until
from local_stack.services import LocalStack
from tests.integration.desk_site import DeskSite, keys_ready, on_fine, serve_desk, sign_in

pytestmark = pytest.mark.integration
LEASE_S = 3.0


@pytest.fixture(scope="module")
def short_lease(stack: LocalStack) -> Iterator[DeskSite]:
    with serve_desk(stack, "it_test_desk_claims", claim_seconds=LEASE_S) as site:
        yield site


def start(site: DeskSite, page, radar: str) -> None:
    page.goto(f"{site.base}/queue?radar_id={radar}")
    page.locator("#start-button").click()


def test_leaving_the_page_releases_the_claim_and_another_officer_gets_it(short_lease, chromium):
    from playwright.sync_api import expect

    (fine,) = short_lease.seed("claims-leave", ["veh-leave"])
    alice_context, alice = sign_in(chromium, short_lease, "alice")
    bob_context, bob = sign_in(chromium, short_lease, "bob")
    start(short_lease, alice, "claims-leave")
    on_fine(alice, fine)
    keys_ready(alice)
    (claim,) = short_lease.claims([fine])
    # Renewed while open: held well past its first lease.
    wait_until(lambda: short_lease.claims([fine])[0]["expires_at"] > claim["expires_at"],
               timeout_s=10, what="a renewal of alice's claim")  # fmt: skip
    start(short_lease, bob, "claims-leave")
    expect(bob.locator("#count")).to_have_text("1 fine awaiting")  # held by alice: none for bob
    alice.goto(f"{short_lease.base}/queue")  # alice leaves the fine's page
    wait_until(lambda: not short_lease.claims([fine])[0]["held"], timeout_s=5,
               what="the claim released by the page alice left")  # fmt: skip
    start(short_lease, bob, "claims-leave")
    on_fine(bob, fine)  # at once, long before a lease could run out
    alice_context.close()
    bob_context.close()


def test_an_abandoned_pages_claim_runs_out_after_the_lease(short_lease, chromium):
    (fine,) = short_lease.seed("claims-gone", ["veh-gone"])
    alice_context, alice = sign_in(chromium, short_lease, "alice")
    bob_context, bob = sign_in(chromium, short_lease, "bob")
    start(short_lease, alice, "claims-gone")
    on_fine(alice, fine)
    alice_context.set_offline(True)  # the laptop closed: no renewal, no pagehide
    wait_until(lambda: not short_lease.claims([fine])[0]["held"], timeout_s=3 * LEASE_S,
               what="alice's lease to run out")  # fmt: skip
    start(short_lease, bob, "claims-gone")
    on_fine(bob, fine)
    (claim,) = short_lease.claims([fine])
    assert claim["reviewer"] == "bob" and claim["held"]
    alice_context.close()
    bob_context.close()
