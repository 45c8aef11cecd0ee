"""Read licence plates from photo files, with the pipeline's own plate readers.

    python -m pipeline.plates [--plate_reader embedded|cloud-vision|cascade]
        [--vision_endpoint HOST:PORT] IMAGE...

prints one JSON line per image: {"file", "license_plate", "plate_confidence",
"plate_reader", "raw_text", "plate_candidates", "plate_box"} (license_plate null when
unreadable, and why on stderr; plate_candidates the plates a person would be offered, best
first; plate_box "x0,y0,x1,y1" or null). The reader is loaded once and reused across
images, as a pipeline worker does. plate_reader names the reader whose reading it is: with
the cascade, the embedded engine for a plate it accepted, else cloud-vision. Cloud Vision
uses Application Default Credentials, or `--vision_endpoint`, a plaintext local server
(tests/fake_vision.py); the cascade opens it only for a photo the embedded reader refused.
"""

import argparse
import json
import sys
from pathlib import Path

from section_speed.clients.plate_readers import (
    EMBEDDED_READER,
    PLATE_MIN_CONFIDENCE,
    PLATE_READERS,
    PlateReader,
    open_plate_reader,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--plate_reader", choices=PLATE_READERS, default=EMBEDDED_READER)
    parser.add_argument("--plate_min_confidence", type=float, default=PLATE_MIN_CONFIDENCE)
    parser.add_argument(
        "--vision_endpoint", metavar="HOST:PORT", help="a local Cloud Vision, for tests"
    )
    args = parser.parse_args(argv)
    vision = {"endpoint": args.vision_endpoint} if args.vision_endpoint else {}
    if vision and args.plate_reader == EMBEDDED_READER:
        parser.error("--vision_endpoint needs --plate_reader cloud-vision or cascade")
    reader = open_plate_reader(args.plate_reader, args.plate_min_confidence, **vision)
    try:
        return _read_each(reader, args.images)
    finally:
        close = getattr(reader, "close", None)
        if callable(close):
            close()


def _read_each(reader: PlateReader, images: list[Path]) -> int:
    failed = False
    for path in images:
        try:
            data = path.read_bytes()
        except OSError as error:
            print(f"plates: cannot read {path}: {error}", file=sys.stderr)
            failed = True
            continue
        (reading,) = reader.read([data])
        if reading.error or reading.reason:
            print(f"plates: {path}: {reading.error or reading.reason}", file=sys.stderr)
        print(json.dumps({"file": str(path), **reading.as_json()}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
