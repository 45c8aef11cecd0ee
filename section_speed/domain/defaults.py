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
# A plate character read less sure than this is doubtful (look-alikes need more:
# docs/plates.md); a plate with a doubtful character is not read automatically.
PLATE_MIN_CONFIDENCE: Final = 0.8
# A traversal is one session: detections of a vehicle closer than the gap belong together.
SESSION_GAP_SECONDS: Final = 60
ALLOWED_LATENESS_SECONDS: Final = 120
# The sections file is read again every this many seconds on a running job; a traversal is
# judged under the version read in the interval it began in. No longer than the session gap,
# so that waiting for the version adds nothing (docs/enforcement.md, Changing limits).
RULES_REFRESH_SECONDS: Final = 60
# A late pane fires this many seconds (processing time) after the first late detection:
# a burst of them (a camera flushing its buffer, a backlog the local runner reads after its
# clock-driven watermark passed) is measured once, whole, not once per bundle on the
# detections read so far (docs/architecture.md, Time).
LATE_FIRING_DELAY_SECONDS: Final = 5
# A detection this close to its lateness deadline is dead-lettered as too late rather than
# risk that the watermark passes the deadline before the detection reaches its session.
LATE_MARGIN_SECONDS: Final = 10
# A timeless (course) session with fewer distinct spot readings than this is not judged:
# the course's generator sends 10 per vehicle, so fewer is a session cut short, most often
# by a runner that fell behind and closed it before the rest were read (docs/course.md,
# Under load). --min_spot_readings changes it for other timeless traffic.
MIN_SPOT_READINGS: Final = 10
# The pipeline is behind when it reads a message this long after it was published (or half
# the session gap, if that is shorter: sessions then close before all is read); it says so
# in the log at most once per interval, with how far (docs/architecture.md, Runners).
LAG_WARNING_SECONDS: Final = 10
LAG_WARNING_INTERVAL_SECONDS: Final = 30

# The default section: a stretch of Broadway in upper Manhattan (docs/course.md).
INITIAL_COORDINATES: Final = (40.819390, -73.940744)
FINAL_COORDINATES: Final = (40.811, -73.950)

# Event times further ahead of the pipeline's clock than this are camera clock faults and
# go to the dead letter: a session keyed on one would stay open, holding state, until the
# watermark reached it. Generous, because `generator --speedup` publishes ahead of event
# time (by the replay's span times 1 - 1/speedup).
MAX_EVENT_TIME_AHEAD_SECONDS: Final = 3600

# A `ts` attribute within this of the body's timestamp is the same instant written another
# way (rounded instead of truncated, to the millisecond or to the second): the body is the
# event time, so such a `ts` never rejects a detection. Further apart, one of the two
# clocks is wrong and the message goes to the dead letter.
TS_ATTRIBUTE_TOLERANCE_MS: Final = 1000

# Plausibility gates before any fine (docs/enforcement.md gives each one's reason).
# A car faster than this is a measurement fault, not a speeder: 200 mph = 321.9 km/h.
MAX_SPEED_MPH: Final = 200.0
# A detection this close to a section end (from the sections file) counts as seeing it;
# only a traversal seen near both ends is judged.
END_RADIUS_M: Final = 60.0
# Detections closer than this are at one place: camera positions are fixed and surveyed.
SAME_PLACE_M: Final = 5.0
# A later detection may lie this much behind an earlier one along the section before the
# order contradicts the times (cameras at the same spot, survey error).
ORDER_TOLERANCE_M: Final = 10.0
# A path through the detections longer than this times the section is a zig-zag (wrong
# locations or a merged vehicle id), not a drive along it.
MAX_PATH_RATIO: Final = 1.5

# Retention (docs/warehouse.md, Retention). Days the warehouse may keep who a vehicle that
# was not fined was (its vehicle_id, in vehicle_identities): 0 writes none. The days are
# the table's partition expiry, set by python -m pipeline.provision.
NON_OFFENDER_RETENTION_DAYS: Final = 0
# Dead letters hold raw input (vehicle ids included) for diagnosis and replay: a month to
# find a fault and replay what it rejected, then gone (the dead_letter partition expiry).
DEAD_LETTER_RETENTION_DAYS: Final = 30
