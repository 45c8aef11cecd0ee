"""Claims last while the fine is on screen (docs/desk.md, Claims): a short lease the open
page renews, released when the page is left, and a closed laptop's runs out."""

from fastapi.testclient import TestClient

from tests.unit.desk_fakes import fine_row, make_app, with_photo
from tests.unit.test_desk_app import csrf_of, hidden, signed_in


def two_officers():
    app, store, photos, _publisher, clock = make_app(reviewer="alice", token="a")
    other = make_app(store=store, photos=photos, clock=clock, reviewer="bob", token="b")[0]
    return app, other, store, photos, clock


def next_of(client) -> str:
    return client.post("/next", data={"csrf": csrf_of(client.get("/queue").text)}).headers[
        "location"
    ]


def test_a_claim_is_a_short_lease_the_page_renews_and_then_runs_out():
    app, other, store, photos, clock = two_officers()
    fine = with_photo(fine_row(), photos)
    store.fines.append(fine)
    with (
        TestClient(app, follow_redirects=False) as alice,
        TestClient(other, follow_redirects=False) as bob,
    ):
        signed_in(alice, "a")
        signed_in(bob, "b")
        page = alice.get(next_of(alice)).text
        assert 'data-renew-ms="20000"' in page  # a third of the 60 s lease
        body = {"csrf": csrf_of(page), "claim_id": hidden(page, "claim_id")}
        renew = f"/fines/{fine['fine_id']}/claim/renew"
        for _ in range(5):  # five minutes on one fine: still hers
            clock.advance(50)
            assert alice.post(renew, data=body).status_code == 204
        assert next_of(bob) == "/queue"
        clock.advance(61)  # the laptop closed: no renewal, the lease ran out
        assert next_of(bob) == f"/fines/{fine['fine_id']}"
        ended = alice.post(renew, data=body)
        assert ended.status_code == 409 and "claim on this fine has ended" in ended.text
        assert alice.post(renew, data={**body, "csrf": "x"}).status_code == 403


def test_leaving_the_page_releases_the_claim_at_once():
    app, other, store, photos, _clock = two_officers()
    fine = with_photo(fine_row(), photos)
    store.fines.append(fine)
    with (
        TestClient(app, follow_redirects=False) as alice,
        TestClient(other, follow_redirects=False) as bob,
    ):
        signed_in(alice, "a")
        signed_in(bob, "b")
        page = alice.get(next_of(alice)).text
        assert next_of(bob) == "/queue"
        body = {"csrf": csrf_of(page), "claim_id": hidden(page, "claim_id")}
        # Only the holder's own claim: bob cannot release it.
        bob_csrf = csrf_of(bob.get("/queue").text)
        release = f"/fines/{fine['fine_id']}/claim/release"
        assert bob.post(release, data={**body, "csrf": bob_csrf}).status_code == 204
        assert next_of(bob) == "/queue"
        assert alice.post(release, data=body).status_code == 204
        assert next_of(bob) == f"/fines/{fine['fine_id']}"  # at once, no clock advanced


def test_a_reloads_late_release_does_not_free_the_page_served_after_it():
    """On a reload the old page's release (a beacon on pagehide) may reach the desk after
    the new page was served and renewed: it names the page it leaves, so the claim stays."""
    app, other, store, photos, clock = two_officers()
    fine = with_photo(fine_row(), photos)
    store.fines.append(fine)
    with (
        TestClient(app, follow_redirects=False) as alice,
        TestClient(other, follow_redirects=False) as bob,
    ):
        signed_in(alice, "a")
        signed_in(bob, "b")
        url = next_of(alice)
        old = alice.get(url).text
        old_body = {"csrf": csrf_of(old), "claim_id": hidden(old, "claim_id"),
                    "served_at": hidden(old, "served_at")}  # fmt: skip
        assert old_body["served_at"]
        clock.advance(1)
        new = alice.get(url).text  # the reloaded page
        assert hidden(new, "served_at") > old_body["served_at"]
        release = f"/fines/{fine['fine_id']}/claim/release"
        assert alice.post(release, data=old_body).status_code == 204  # the late beacon
        assert next_of(bob) == "/queue"  # still alice's
        new_body = {**old_body, "served_at": hidden(new, "served_at")}
        assert alice.post(release, data=new_body).status_code == 204  # leaving for real
        assert next_of(bob) == f"/fines/{fine['fine_id']}"
        bad = alice.post(release, data={**new_body, "served_at": "not a time"})
        assert bad.status_code == 422
