"""`python -m pipeline.plates IMAGE...`: one JSON line per image, the reader loaded once."""

import json

from PIL import Image

from generator.car_images import render_car_photo
from pipeline import plates
from section_speed.domain.plate_formats import plate_for_vehicle


def test_plates_cli_prints_one_json_line_per_image(tmp_path, capsys):
    files = []
    for vehicle_id in ("veh-cli-1", "veh-cli-2"):
        path = tmp_path / f"{vehicle_id}.jpg"
        path.write_bytes(render_car_photo(vehicle_id))
        files.append(path)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a photo")
    assert plates.main([str(p) for p in [*files, junk]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(p) for p in [*files, junk]]
    assert [line["license_plate"] for line in lines] == [
        plate_for_vehicle("veh-cli-1"),
        plate_for_vehicle("veh-cli-2"),
        None,
    ]
    assert set(lines[0]) == {
        "file", "license_plate", "plate_confidence", "plate_reader", "raw_text",
        "plate_candidates", "plate_box",
    }  # fmt: skip
    assert lines[0]["plate_reader"] == "embedded-rapidocr"
    assert lines[0]["plate_candidates"][0] == plate_for_vehicle("veh-cli-1")
    x0, y0, x1, y1 = (int(value) for value in lines[0]["plate_box"].split(","))
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert lines[2]["plate_candidates"] == [] and lines[2]["plate_box"] is None


def test_plates_cli_reports_a_missing_file_and_fails(tmp_path, capsys):
    assert plates.main([str(tmp_path / "missing.jpg")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_plates_cli_says_why_a_photo_has_no_plate(tmp_path, capsys):
    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (640, 480), (128, 132, 140)).save(blank, "JPEG")
    assert plates.main([str(blank)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["license_plate"] is None
    assert captured.err == f"plates: {blank}: no plate among 0 text lines\n"
