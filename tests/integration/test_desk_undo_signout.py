"""Undo and sign-out in Chromium (docs/desk.md, The undo window; Sessions).

- After a decision the page says what was decided, with its undo; Ctrl+Z inside the window
  gives the fine back and nothing is issued (its outbox rows cancelled, never sent). The
  banner passes the axe audit.
- A login link signs in one browser once; Sign-out ends the session on the server, so the
  signed-out cookie opens nothing.
"""

import re

import pytest

from tests.integration.desk_site import keys_ready, on_fine, sign_in
from tests.integration.test_desk_a11y import AUDIT, audit

pytestmark = pytest.mark.integration


def test_ctrl_z_inside_the_window_gives_the_fine_back_and_issues_nothing(desk_site, chromium):
    from playwright.sync_api import expect

    (fine,) = desk_site.seed("undo-key", ["veh-undo"])
    context, page = sign_in(chromium, desk_site, "uma", **AUDIT)
    page.goto(f"{desk_site.base}/queue?radar_id=undo-key")
    page.locator("#start-button").click()
    on_fine(page, fine)
    keys_ready(page)
    page.keyboard.press("Enter")  # confirms the plate as read
    banner = page.locator("#last-decision")
    expect(banner).to_contain_text(f"{fine['license_plate']} confirmed · Ctrl+Z to undo")
    audit(page, "after a decision, with its undo")
    page.keyboard.press("Control+z")
    on_fine(page, fine)  # hers again
    expect(banner).to_contain_text("confirmed · undone: nothing was issued")
    (review,) = desk_site.reviews([fine])  # the audit trail keeps the decision ...
    rows = desk_site._rows(
        "SELECT o.kind, o.sent_at, o.cancelled_at, u.review_id AS undone FROM outbox o "
        "JOIN undos u ON u.review_id = :rid "
        "WHERE (o.kind = 'review' AND o.key = :rid) OR (o.kind = 'notice' AND o.key IN "
        "(SELECT notice_id FROM notices WHERE review_id = :rid)) ORDER BY o.id",
        rid=review["review_id"],
    )  # ... and its undo, and what it would have sent, cancelled
    assert [(r["kind"], r["sent_at"], r["cancelled_at"] is not None) for r in rows] == [
        ("review", None, True),
        ("notice", None, True),
    ]
    context.close()


def test_a_login_link_works_once_and_sign_out_ends_the_session(desk_site, chromium):
    from playwright.sync_api import expect

    url = desk_site.login_url()
    first = chromium.new_context()
    page = first.new_page()
    page.goto(url)
    page.locator("#name").fill("sam")
    page.keyboard.press("Enter")
    expect(page.locator("#reviewer")).to_have_text("sam")
    cookies = first.cookies()
    second = chromium.new_context()  # someone else with the same link, later
    other = second.new_page()
    other.goto(url)
    other.locator("#name").fill("mallory")
    other.keyboard.press("Enter")
    expect(other.locator("#message")).to_contain_text("used already")
    assert second.cookies() == []
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#message")).to_contain_text("sam signed out")
    second.add_cookies(cookies)  # the cookie as it was before signing out
    response = other.goto(f"{desk_site.base}/queue")
    assert response is not None and response.status == 401
    assert re.search("signed out", other.locator("#message").inner_text())
    first.close()
    second.close()
