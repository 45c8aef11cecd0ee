"""The benchmarks' label corrections (bench/label_corrections.csv): well-formed, applied only
where the published label is still the one each corrects."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from plates_real import CORRECTIONS_FILE, Correction, corrected, load_corrections  # noqa: E402

from section_speed.domain.plate_formats import normalise_plate  # noqa: E402


def test_every_correction_names_a_plate_a_different_label_and_its_evidence():
    corrections = load_corrections(Path("/photos/us"))
    assert set(corrections) == {"wts-lg-000159.jpg", "wts-lg-000085.jpg"}
    for correction in corrections.values():
        assert normalise_plate(correction.plate) == correction.plate
        assert correction.published_label != correction.plate
        assert len(correction.evidence) > 40, correction.file
    assert load_corrections(Path("/photos/br")) == {}
    assert CORRECTIONS_FILE.parent == BENCH


def test_a_correction_applies_only_to_the_label_it_corrects(capsys):
    folder = Path("/photos/us")
    corrections = {
        "a.jpg": Correction("a.jpg", "5DJ0529", "BDJ0529", "left stem"),
        "b.jpg": Correction("b.jpg", "59E21P1", "59321P1", "plain 3"),
    }
    labels = {folder / "a.jpg": "5DJ0529", folder / "b.jpg": "59321P1", folder / "c.jpg": "ABC1234"}
    fixed, applied = corrected(labels, corrections)
    assert fixed == {
        folder / "a.jpg": "BDJ0529",
        folder / "b.jpg": "59321P1",
        folder / "c.jpg": "ABC1234",
    }
    assert [correction.file for correction in applied] == ["a.jpg"]
    assert (
        "b.jpg not applied: it corrects 59E21P1, the set now says 59321P1"
        in capsys.readouterr().out
    )
