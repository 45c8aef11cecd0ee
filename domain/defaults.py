"""Defaults shared by the pipeline options, the generator and the docs (one source)."""

from typing import Final

PROJECT_ID: Final = "section-speed-local"
INPUT_TOPIC: Final = "camera-events"
INPUT_SUBSCRIPTION: Final = "camera-events-sub"
OUTPUT_TOPIC: Final = "fines"
DEAD_LETTER_TOPIC: Final = "dead-letter"
RADAR_ID: Final = "radar-1"

SPEED_LIMIT_MPH: Final = 25.0
TOLERANCE_MPH: Final = 0.0
# A traversal is one session: detections of a vehicle closer than the gap belong together.
SESSION_GAP_SECONDS: Final = 60
ALLOWED_LATENESS_SECONDS: Final = 120

# The course's section: a stretch of Broadway in upper Manhattan.
INITIAL_COORDINATES: Final = (40.819390, -73.940744)
FINAL_COORDINATES: Final = (40.811, -73.950)
