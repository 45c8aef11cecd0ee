"""The graph's elements round-trip through their registered, deterministic coders."""

from dataclasses import replace

import pytest
from apache_beam import coders

from section_speed.clients.evidence_store import StoredPhoto
from section_speed.domain.events import CameraEvent
from section_speed.domain.identity import RejectedSession, SessionVerdict
from section_speed.domain.judging import judge_traversal
from section_speed.domain.plate_reading import PlateReading
from section_speed.domain.traversal import Traversal
from tests.helpers import section, track
from transforms.failures import PARSE_STAGE, Failure
from transforms.fine_evidence import FineEvidence
from transforms.warehouse import WarehouseRow

EVENT = track("v-1", 70.0)[0]
TRAVERSAL = replace(judge_traversal(track("v-1", 70.0), section()), supersedes=("a" * 32,))
READING = PlateReading("ABC1234", 0.97, "ABC 1234", "rapidocr")

ELEMENTS = [
    (CameraEvent, EVENT),
    (CameraEvent, replace(EVENT, speed_kmh=None, timed=False, event_id="m-" + "0" * 32)),
    (Traversal, TRAVERSAL),
    (Failure, Failure(PARSE_STAGE, "not JSON", b"\x00\xff raw", {"ts": "1"}, 1_700_000_000_000)),
    (Failure, Failure(PARSE_STAGE, "bug", b"{}", {}, 1, "Traceback (most recent call last):")),
    (Traversal, replace(TRAVERSAL, is_speeding=False, withdrawn_reason="implausible: why")),
    (SessionVerdict, SessionVerdict(traversal=TRAVERSAL)),
    (SessionVerdict, SessionVerdict(rejected=RejectedSession("partial", "why", 1, 2))),
    (WarehouseRow, WarehouseRow("fines", "id-1", {"fine_id": "f", "avg_speed_kmh": 70.5})),
    (FineEvidence, FineEvidence(TRAVERSAL)),
    (
        FineEvidence,
        FineEvidence(
            TRAVERSAL,
            photo=b"\xff\xd8photo",
            photo_url="https://cars.example/1.jpg",
            content_type="image/jpeg",
            reading=READING,
            stored=StoredPhoto("gs://b/o.jpg", "e" * 64, True, READING),
            error="store_photo: down",
        ),
    ),
]


@pytest.mark.parametrize(("kind", "element"), ELEMENTS)
def test_each_element_round_trips_through_a_deterministic_coder(kind, element):
    coder = coders.registry.get_coder(kind)
    assert coder.is_deterministic(), f"{kind.__name__} would be pickled"
    encoded = coder.encode(element)
    assert coder.decode(encoded) == element
    assert coder.encode(coder.decode(encoded)) == encoded  # the same bytes every time


def test_a_traversal_in_flight_from_before_session_verdicts_decodes_as_one():
    encoded = coders.registry.get_coder(Traversal).encode(TRAVERSAL)
    decoded = coders.registry.get_coder(SessionVerdict).decode(encoded)
    assert decoded == SessionVerdict(traversal=TRAVERSAL)
