"""Defaults shared by the pipeline options, the generator and the docs (one source)."""

from typing import Final

PROJECT_ID: Final = "section-speed-local"
INPUT_TOPIC: Final = "camera-events"
INPUT_SUBSCRIPTION: Final = "camera-events-sub"
OUTPUT_TOPIC: Final = "fines"
DEAD_LETTER_TOPIC: Final = "dead-letter"
RADAR_ID: Final = "radar-1"
EVIDENCE_BUCKET: Final = "section-speed-evidence"  # local stack's bucket for fine photos

SPEED_LIMIT_MPH: Final = 25.0
TOLERANCE_MPH: Final = 0.0
# A traversal is one session: detections of a vehicle closer than the gap belong together.
SESSION_GAP_SECONDS: Final = 60
ALLOWED_LATENESS_SECONDS: Final = 120
# A detection this close to its lateness deadline is dead-lettered as too late rather than
# risk that the watermark passes the deadline before the detection reaches its session.
LATE_MARGIN_SECONDS: Final = 10

# The course's section: a stretch of Broadway in upper Manhattan.
INITIAL_COORDINATES: Final = (40.819390, -73.940744)
FINAL_COORDINATES: Final = (40.811, -73.950)

# Event times further ahead of the pipeline's clock than this are camera clock faults and
# go to the dead letter: a session keyed on one would stay open, holding state, until the
# watermark reached it. Generous, because `generator --speedup` publishes ahead of event
# time (by the replay's span times 1 - 1/speedup).
MAX_EVENT_TIME_AHEAD_SECONDS: Final = 3600
