"""The desk's screens for every officer (WCAG 2.2), in Chromium at 1366x900.

- axe-core (npm, tests/browser/package-lock.json; scripts/bootstrap.sh installs it) audits
  every screen: sign-in, the queue, a fine to decide, its keys panel, a fine another
  officer holds, a decided fine, an error page and the empty queue: no serious or critical
  violation.
- Focus is clearly visible on every control: a 3 px ring, not the browser's thin default.
- One-key shortcuts can be turned off and remapped (success criterion 2.1.4), and the
  setting is kept.
- What an officer decides with is above the fold, and the late plate crop moves nothing.
"""

import pytest

from tests.integration.desk_site import AXE, TOKEN, keys_ready, on_fine, sign_in

pytestmark = pytest.mark.integration
BLOCKING = ("serious", "critical")
MAX_TABS = 60
# Pages forbid inline script (CSP); the audit's own script is injected around it.
AUDIT = {"bypass_csp": True}


def audit(page, screen: str) -> None:
    """axe-core on the page as it is: fails listing each serious or critical violation."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: (cd tests/browser && npm ci) (scripts/bootstrap.sh)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    blocking = [v for v in result["violations"] if v["impact"] in BLOCKING]
    report = "\n".join(
        f"{screen}: {v['impact']} {v['id']}: {v['help']} ({v['helpUrl']})\n"
        + "\n".join(f"    {n['target']}: {n['failureSummary']}" for n in v["nodes"])
        for v in blocking
    )
    print(report)
    assert blocking == [], report


def test_every_screen_passes_the_axe_audit(desk_site, chromium):
    from playwright.sync_api import expect

    fines = desk_site.seed("a11y-audit", ["veh-a11y-1", "veh-a11y-2", "veh-a11y-3"])
    anonymous = chromium.new_context(viewport={"width": 1366, "height": 900}, **AUDIT)
    login = anonymous.new_page()
    login.goto(f"{desk_site.base}/login?token={TOKEN}")
    audit(login, "sign-in")
    login.goto(f"{desk_site.base}/queue")
    audit(login, "sign-in needed (401)")
    anonymous.close()

    context, page = sign_in(chromium, desk_site, "ada", **AUDIT)
    other_context, other = sign_in(chromium, desk_site, "bea", **AUDIT)
    page.goto(f"{desk_site.base}/queue?radar_id=a11y-audit")
    keys_ready(page)
    audit(page, "queue")

    page.locator("#start-button").click()
    on_fine(page, fines[0])
    keys_ready(page)
    audit(page, "a fine to decide")
    page.locator("#keys-panel summary").click()
    expect(page.locator("#keys-enabled")).to_be_visible()
    audit(page, "a fine, the keys panel open")
    page.locator("#keys-panel summary").click()

    other.goto(f"{desk_site.base}/fines/{fines[0]['fine_id']}")
    expect(other.locator("#taken")).to_contain_text("Taken by ada")
    audit(other, "a fine another officer holds")

    for _ in fines:
        page.keyboard.press("1")  # plate unreadable: nothing is issued
        page.wait_for_load_state()
        keys_ready(page)
    expect(page.locator("#all-done")).to_contain_text("All done")
    audit(page, "the empty queue")
    page.goto(f"{desk_site.base}/fines/{fines[0]['fine_id']}")
    expect(page.locator("#state")).to_have_text("Nothing left to decide on this fine.")
    expect(page.locator("#taken")).to_have_count(0)
    audit(page, "a decided fine")
    page.goto(f"{desk_site.base}/fines/{'0' * 32}")
    audit(page, "no such fine (404)")
    context.close()
    other_context.close()


def focus_ring(page) -> dict:
    return page.evaluate(
        """() => { const s = getComputedStyle(document.activeElement);
                   return {what: document.activeElement.outerHTML.slice(0, 80),
                           style: s.outlineStyle, width: parseFloat(s.outlineWidth),
                           colour: s.outlineColor, shadow: s.boxShadow}; }"""
    )


def tab_through(page) -> list[dict]:
    """The focus ring of every control Tab reaches, once round the page."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    rings: dict[str, dict] = {}  # a date field's parts are one control
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        ring = focus_ring(page)
        if ring["what"].startswith("<body") or (rings and ring["what"] == next(iter(rings))):
            break  # round the page
        rings[ring["what"]] = ring
    return list(rings.values())


def test_focus_is_clearly_visible_on_every_control(desk_site, chromium):
    (fine,) = desk_site.seed("a11y-focus", ["veh-focus"])
    context, page = sign_in(chromium, desk_site, "fay")
    page.goto(f"{desk_site.base}/queue?radar_id=a11y-focus")
    keys_ready(page)
    queue = tab_through(page)
    page.locator("#start-button").click()
    on_fine(page, fine)
    keys_ready(page)
    decision = tab_through(page)
    context.close()

    assert len(queue) >= 8 and len(decision) >= 8, (queue, decision)  # filters, buttons, links
    # A 3 px yellow ring inside a near-black one: seen on the white page and the dark header.
    faint = [
        r
        for r in queue + decision
        if r["style"] != "solid" or r["width"] < 3 or "rgb(11, 12, 12)" not in r["shadow"]
    ]
    assert faint == []


def test_one_key_shortcuts_can_be_turned_off_and_remapped(desk_site, chromium):
    from playwright.sync_api import expect

    fines = desk_site.seed("a11y-keys", ["veh-keys-1", "veh-keys-2"])
    context, page = sign_in(chromium, desk_site, "kai")
    page.goto(f"{desk_site.base}/queue?radar_id=a11y-keys")
    page.locator("#start-button").click()
    on_fine(page, fines[0])
    keys_ready(page)

    # Off: a character key does nothing (here: would have rejected as wrong vehicle).
    page.locator("#keys-panel summary").click()
    page.locator("#keys-enabled").uncheck()
    page.locator("#keys-panel summary").click()
    page.keyboard.press("2")
    expect(page.locator("#hint")).to_contain_text("One-key shortcuts are off")
    page.reload()  # the setting is kept (localStorage)
    on_fine(page, fines[0])
    keys_ready(page)
    expect(page.locator("html")).to_have_attribute("data-shortcuts", "off")
    page.keyboard.press("2")
    assert desk_site.reviews(fines) == []

    # Remapped: wrong vehicle is "w"; back on, "w" rejects and "2" no longer does.
    page.locator("#keys-panel summary").click()
    page.locator('input[data-remap="wrong_vehicle"]').fill("w")
    page.locator('input[data-remap="wrong_vehicle"]').press("Tab")
    page.locator("#keys-enabled").check()
    page.locator("#keys-panel summary").click()
    expect(page.locator("#reject-2 kbd")).to_have_text("w")
    page.evaluate("document.activeElement.blur()")  # nothing focused
    page.keyboard.press("2")  # no longer a reject key: it starts typing a plate
    expect(page.locator("#plate")).to_have_value("2")
    page.keyboard.press("Escape")
    page.keyboard.press("w")
    on_fine(page, fines[1])
    context.close()
    (review,) = desk_site.reviews(fines)
    assert (review["fine_id"], review["reason"]) == (fines[0]["fine_id"], "wrong_vehicle")


def bottom(page, selector: str) -> float:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["y"] + box["height"]


def test_what_an_officer_decides_with_is_above_the_fold_and_stays_put(desk_site, chromium):
    """At 1366x900: the reject buttons, the note and the key hints are on screen without
    scrolling, and the enlarged plate arriving late moves none of them."""
    from playwright.sync_api import expect

    (fine,) = desk_site.seed("a11y-fold", ["veh-fold"])
    context, page = sign_in(chromium, desk_site, "flo")
    page.goto(f"{desk_site.base}/queue?radar_id=a11y-fold")
    held = []  # the plate region, answered only when the test lets it through
    page.route("**/fines/*/plate", lambda route: held.append(route))
    page.locator("#start-button").click()
    on_fine(page, fine)
    expect(page.locator("#hint")).to_be_visible()
    controls = ["#reject-1", "#reject-4", "#note", "#hint", "#submit-plate", "#plate"]
    before = {selector: bottom(page, selector) for selector in controls}
    if held:  # the fines table has the plate's region: let the crop arrive now
        held[0].continue_()
        page.wait_for_function("() => document.getElementById('plate-crop').naturalWidth > 0")
    page.unroute("**/fines/*/plate")
    after = {selector: bottom(page, selector) for selector in controls}
    fold = page.viewport_size["height"]
    context.close()
    assert all(edge <= fold for edge in after.values()), (after, fold)
    assert after == before  # the crop's space was kept for it
