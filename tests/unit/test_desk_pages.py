"""What the desk's templates show for each case (rendered directly, no store): who is told
a fine changed since their decision, no "Taken by" on a decided fine, an empty queue that
says all done, and the fields a decision posts for the server's checks."""

import re

from desk.app import templates
from desk.forms import QueueParams
from desk.presentation import MIN_LOOK_MS
from desk.store import Claim, Fine, FineRecord, QueueEntry, Review
from desk.workflow import FineView, Photo
from tests.unit.desk_fakes import fine_row as fine_record

ENV = templates().env


def fine_row(**values) -> Fine:
    return Fine.from_record(fine_record(**values))


def holder(fine: Fine) -> Claim:
    return Claim(
        "c" * 32, fine.fine_id, fine.revision, "ana",
        "2026-11-18T09:00:00.000Z", "2026-11-18T09:05:00.000Z",
    )  # fmt: skip


def review(fine: Fine, reviewer: str) -> Review:
    return Review(
        "r" * 32, fine.fine_id, 0, "confirmed", fine.license_plate, fine.license_plate,
        None, None, reviewer, "2026-11-18T07:59:00.000Z", "2026-11-18T08:00:00.000Z",
    )  # fmt: skip


def view_of(fine: Fine, reviews: list[Review], state: str | None) -> FineView:
    record = FineRecord(fine, [fine], reviews, state, holder(fine))
    return FineView(record, Photo(b"jpeg", verified=True))


def fine_page(view: FineView, reviewer: str, has_photo: bool = True) -> str:
    held = view.holder
    return ENV.get_template("fine.html").render(
        view=view,
        fine=view.fine,
        mine=held is not None and held.reviewer == reviewer,
        has_photo=has_photo,
        photo_mismatch=False,
        has_plate_box=False,
        candidates=[],
        plate_value=view.fine.license_plate or "",
        params=QueueParams(),
        reviewer=reviewer,
        csrf="t",
        error=None,
    )


def text_of(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</p>', page, re.S)
    assert found, element_id
    return " ".join(re.sub(r"<[^>]+>", "", found[1]).split())


def test_changed_since_your_decision_is_said_only_to_the_officer_who_decided():
    fine = fine_row(revision=1, image_sha256="a" * 64)
    view = view_of(fine, [review(fine, "bo")], "changed")
    assert text_of(fine_page(view, "bo"), "state").startswith("Changed since your decision")
    told = text_of(fine_page(view, "ana"), "state")
    assert told.startswith("Revised since bo's decision") and "your" not in told


def test_a_decided_fine_says_nothing_is_left_and_not_who_holds_it():
    fine = fine_row()
    view = view_of(fine, [review(fine, "bo")], None)
    page = fine_page(view, "bo")
    assert text_of(page, "state") == "Nothing left to decide on this fine."
    assert 'id="taken"' not in page and 'id="decision"' not in page
    held = fine_page(view_of(fine, [], "new"), "bo")
    assert "Taken by ana until" in held  # an undecided fine someone else holds


def test_the_decision_posts_how_long_and_which_photo_was_shown():
    fine = fine_row(image_sha256="b" * 64)
    page = fine_page(view_of(fine, [], "new"), "ana")
    assert f'data-min-look-ms="{MIN_LOOK_MS}"' in page
    assert '<input type="hidden" name="shown_ms" value="">' in page
    assert f'<input type="hidden" name="photo_sha256" value="{"b" * 64}">' in page
    unseen = fine_page(view_of(fine, [], "new"), "ana", has_photo=False)
    assert '<input type="hidden" name="photo_sha256" value="">' in unseen
    # Entry and exit: the section's local time (UTC until it names a zone) and a place.
    assert re.search(r'id="entry"><time datetime="[^"]+">\d{4}-\d\d-\d\d [\d:]+ UTC</time> at '
                     r"\d+\.\d{5}° N, \d+\.\d{5}° W</dd>", page)  # fmt: skip


def queue_page(rows: list, reviewer: str = "ana", params: QueueParams | None = None) -> str:
    return ENV.get_template("queue.html").render(
        rows=rows, params=params or QueueParams(), reviewer=reviewer, csrf="t"
    )


def test_an_empty_queue_says_all_done_and_offers_no_start():
    page = queue_page([])
    assert text_of(page, "all-done") == "All done: no fine awaits verification."
    assert 'id="start"' not in page and "Start" not in page
    filtered = queue_page([], params=QueueParams(radar_id="radar-2"))
    assert text_of(filtered, "all-done").endswith("under these filters.")


def test_the_queue_marks_a_changed_fine_for_whoever_decided_it():
    fine = fine_row()
    rows = [(QueueEntry(fine, "changed", review(fine, "bo"), None), None)]
    assert ">changed since your decision<" in queue_page(rows, "bo")
    assert ">revised since bo's decision<" in queue_page(rows, "ana")
    assert 'id="start"' in queue_page(rows)


def test_the_limit_shows_where_it_came_from_and_the_vehicle_class():
    fine = fine_row(
        limit_source="window",
        limit_reference="school hours",
        rules_version="0123456789abcdef",
        vehicle_class="hgv",
    )
    page = fine_page(view_of(fine, [], "new"), "ana")
    limit = re.search(r'id="limit">(.*?)</dd>', page, re.S)[1]
    assert re.sub(r"<[^>]+>", "", limit).startswith(
        "25 mph (window: school hours; rules 0123456789abcdef)"
    )
    assert 'id="vehicle-class">hgv</dd>' in page
    default = fine_page(view_of(fine_row(), [], "new"), "ana")
    assert '<span id="limit-source">(default' in default
    assert 'id="vehicle-class"' not in default
    before = fine_row(limit_source=None, limit_reference=None, rules_version=None)
    older = fine_page(view_of(before, [], "new"), "ana")  # judged before limits varied
    assert 'id="limit-source"' not in older
