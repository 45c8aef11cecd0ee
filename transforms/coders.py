"""Deterministic coders for the elements the graph shuffles and keeps in state.

Without them Beam falls back to pickling (slow, not deterministic across versions, and
tied to the classes, which matters for state kept over a pipeline update). Registered on
import of the transforms, so every process that builds or runs the graph uses them.
"""

import dataclasses
import json
import math
import struct

from apache_beam import coders

from section_speed.domain.events import CameraEvent
from section_speed.domain.identity import RejectedSession, SessionVerdict
from section_speed.domain.traversal import Traversal, traversal_from_json, traversal_to_json

# time, lat, lon, speed (NaN: none), timed, and the lengths of the 3 ids that follow
_FIXED_SIZE_FIELDS = struct.Struct("<qddd?HHH")


class CameraEventCoder(coders.Coder):
    def encode(self, event: CameraEvent) -> bytes:
        ids = [event.event_id.encode(), event.radar_id.encode(), event.vehicle_id.encode()]
        speed = math.nan if event.speed_kmh is None else event.speed_kmh
        head = _FIXED_SIZE_FIELDS.pack(
            event.event_time_ms,
            event.location[0],
            event.location[1],
            speed,
            event.timed,
            *(len(part) for part in ids),
        )
        return head + b"".join(ids)

    def decode(self, encoded: bytes) -> CameraEvent:
        time_ms, lat, lon, speed, timed, *lengths = _FIXED_SIZE_FIELDS.unpack_from(encoded)
        offset, parts = _FIXED_SIZE_FIELDS.size, []
        for length in lengths:
            parts.append(encoded[offset : offset + length].decode())
            offset += length
        event_id, radar_id, vehicle_id = parts
        return CameraEvent(
            event_id=event_id,
            radar_id=radar_id,
            vehicle_id=vehicle_id,
            location=(lat, lon),
            event_time_ms=time_ms,
            speed_kmh=None if math.isnan(speed) else speed,
            timed=timed,
        )

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return CameraEvent


coders.registry.register_coder(CameraEvent, CameraEventCoder)


# Elements that wait in state (batches for the plate reader and the warehouse) are coded
# as JSON, not pickled: a text form survives a pipeline update that changes their classes.


class TraversalCoder(coders.Coder):
    def encode(self, traversal: Traversal) -> bytes:
        return json.dumps(traversal_to_json(traversal), separators=(",", ":")).encode()

    def decode(self, encoded: bytes) -> Traversal:
        return traversal_from_json(json.loads(encoded))

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return Traversal


coders.registry.register_coder(Traversal, TraversalCoder)


class SessionVerdictCoder(coders.Coder):
    """Judged sessions cross the shuffle before the identity step as JSON: update-safe."""

    def encode(self, verdict: SessionVerdict) -> bytes:
        value = {
            "traversal": verdict.traversal and traversal_to_json(verdict.traversal),
            "rejected": verdict.rejected and dataclasses.asdict(verdict.rejected),
        }
        return json.dumps(value, separators=(",", ":")).encode()

    def decode(self, encoded: bytes) -> SessionVerdict:
        value = json.loads(encoded)
        if "traversal" not in value:  # in flight from a job whose shuffle carried Traversals
            return SessionVerdict(traversal=traversal_from_json(value))
        return SessionVerdict(
            traversal=value["traversal"] and traversal_from_json(value["traversal"]),
            rejected=value["rejected"] and RejectedSession(**value["rejected"]),
        )

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return SessionVerdict


coders.registry.register_coder(SessionVerdict, SessionVerdictCoder)
