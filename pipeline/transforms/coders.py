"""A deterministic, compact coder for camera events, the elements every shuffle carries.

Without it Beam falls back to pickling each event (slow, and not deterministic across
versions, which matters for state kept over a pipeline update). Registered on import of
the transforms, so every process that builds or runs the graph uses it.
"""

import math
import struct

from apache_beam import coders

from pipeline.domain.events import CameraEvent

_FIXED = struct.Struct("<qddd?HHH")  # time, lat, lon, speed (NaN: none), timed, 3 lengths


class CameraEventCoder(coders.Coder):
    def encode(self, event: CameraEvent) -> bytes:
        ids = [event.event_id.encode(), event.radar_id.encode(), event.vehicle_id.encode()]
        speed = math.nan if event.speed_kmh is None else event.speed_kmh
        head = _FIXED.pack(
            event.event_time_ms,
            event.location[0],
            event.location[1],
            speed,
            event.timed,
            *(len(part) for part in ids),
        )
        return head + b"".join(ids)

    def decode(self, encoded: bytes) -> CameraEvent:
        time_ms, lat, lon, speed, timed, *lengths = _FIXED.unpack_from(encoded)
        offset, parts = _FIXED.size, []
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
