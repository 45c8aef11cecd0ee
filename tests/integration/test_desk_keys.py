"""The desk's keys decide only what the officer meant (docs/desk.md), in Chromium.

- A focused control does what it says: Tab to "2: wrong vehicle in the photo" and Enter
  rejects (it confirmed, and issued a notice); on the queue, Enter on a fine's link opens
  that fine and Enter on Filter filters (both started the oldest fine).
- A held Enter (key auto-repeat) decides one fine, not every fine it reaches.
- No decision key counts before the fine's photo is on screen; the decision then carries
  how long it was shown (`shown_ms`) and which photo (`photo_sha256`).
"""

import re
import time
from urllib.parse import parse_qs

import pytest

from desk.presentation import MIN_LOOK_MS
from local_stack.processes import wait_until
from tests.integration.desk_site import keys_ready, on_fine, sign_in

pytestmark = pytest.mark.integration
HOLD_S = 2.5  # how long the officer of the issue held Enter
REPEAT_MS = 33  # a keyboard's auto-repeat rate: 30 a second
MAX_TABS = 40


def focus_by_tab(page, selector: str) -> None:
    """Tab from the page's start until `selector` has the focus, as an officer would."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} not reached in {MAX_TABS} presses of Tab")


def test_enter_on_a_focused_reject_button_rejects_and_issues_nothing(desk_site, chromium):
    from playwright.sync_api import expect

    (fine,) = desk_site.seed("keys-tab", ["veh-tab"])
    context, page = sign_in(chromium, desk_site, "tess")
    page.goto(f"{desk_site.base}/queue?radar_id=keys-tab")
    page.locator("#start-button").click()
    on_fine(page, fine)
    keys_ready(page)

    focus_by_tab(page, "#reject-2")
    expect(page.locator("#reject-2")).to_contain_text("2: wrong vehicle in the photo")
    page.keyboard.press("Enter")
    expect(page.locator("#count")).to_have_text("0 fines awaiting")
    context.close()

    (review,) = desk_site.reviews([fine])
    assert (review["decision"], review["reason"]) == ("rejected", "wrong_vehicle")


def test_enter_on_a_queue_link_opens_that_fine_and_on_filter_filters(desk_site, chromium):
    from playwright.sync_api import expect

    fines = desk_site.seed("keys-link", ["veh-link-1", "veh-link-2", "veh-link-3"])
    context, page = sign_in(chromium, desk_site, "lena")
    page.goto(f"{desk_site.base}/queue?radar_id=keys-link")
    keys_ready(page)

    # Filter: Tab to the button, Enter; the queue filtered by the section typed, no fine.
    page.locator('#filters input[name="radar_id"]').fill("keys-link")
    page.locator('#filters input[name="max_confidence"]').fill("1")
    focus_by_tab(page, "#filters button")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/queue\?.*max_confidence=1"))
    expect(page.locator("#queue tbody tr")).to_have_count(3)

    # The newest fine's link, focused: Enter opens that fine, not the oldest.
    newest = fines[-1]
    page.locator(f'#queue tr[data-fine-id="{newest["fine_id"]}"] a').focus()
    page.keyboard.press("Enter")
    on_fine(page, newest)
    context.close()
    assert desk_site.reviews(fines) == []  # nothing decided, nothing claimed by a key


def test_a_held_enter_decides_one_fine(desk_site, chromium):
    fines = desk_site.seed("keys-hold", [f"veh-hold-{n}" for n in range(5)])
    context, page = sign_in(chromium, desk_site, "hal")
    page.goto(f"{desk_site.base}/queue?radar_id=keys-hold")
    page.locator("#start-button").click()
    on_fine(page, fines[0])
    keys_ready(page)

    # Enter held down: one press, then the keyboard's auto-repeat (repeat=true) until let go.
    # The waits here are the key's own timing, not waiting for the page.
    page.keyboard.down("Enter")
    until = time.monotonic() + HOLD_S
    while time.monotonic() < until:
        page.wait_for_timeout(REPEAT_MS)
        page.keyboard.down("Enter")  # Playwright sends a repeat while the key is down
    page.keyboard.up("Enter")

    page.wait_for_load_state()
    keys_ready(page)
    decided = desk_site.reviews(fines)
    assert [(r["fine_id"], r["decision"]) for r in decided] == [(fines[0]["fine_id"], "confirmed")]
    on_fine(page, fines[1])  # the next fine is shown, and undecided
    context.close()


def test_no_key_decides_before_the_photo_is_on_screen(desk_site, chromium):
    from playwright.sync_api import expect

    fines = desk_site.seed("keys-look", ["veh-look-1", "veh-look-2"])
    context, page = sign_in(chromium, desk_site, "lou")
    page.goto(f"{desk_site.base}/queue?radar_id=keys-look")
    held = []  # the photo's request, answered only when the test lets it through
    page.route("**/fines/*/photo", lambda route: held.append(route))
    page.locator("#start-button").click()
    on_fine(page, fines[0])
    page.wait_for_load_state("domcontentloaded")  # the deferred key script has run
    wait_until(lambda: bool(held), timeout_s=15, what="the photo's request")

    # The photo is not on screen: Enter, and a reject key, decide nothing.
    page.keyboard.press("Enter")
    expect(page.locator("#hint")).to_contain_text("Look at the photo first")
    page.keyboard.press("3")
    on_fine(page, fines[0])
    assert desk_site.reviews(fines) == []

    # The photo arrives and is shown: after a moment Enter confirms, saying what was seen.
    held[0].continue_()
    page.unroute("**/fines/*/photo")
    keys_ready(page)
    with page.expect_request(lambda r: r.method == "POST" and "/decision" in r.url) as posted:
        page.keyboard.press("Enter")
    form = parse_qs(posted.value.post_data or "")
    on_fine(page, fines[1])
    context.close()
    assert form["photo_sha256"] == [fines[0]["image_sha256"]]
    assert int(form["shown_ms"][0]) >= MIN_LOOK_MS
    (review,) = desk_site.reviews(fines)
    assert (review["fine_id"], review["decision"]) == (fines[0]["fine_id"], "confirmed")
