"""Great-circle geometry on WGS84 coordinates."""

import itertools
import math
from collections.abc import Sequence

# Mean Earth radius (IUGG), the radius of every distance (docs/enforcement.md).
EARTH_RADIUS_M = 6_371_008.8

LatLon = tuple[float, float]


def haversine_m(a: LatLon, b: LatLon) -> float:
    """Great-circle distance in metres between two (lat, lon) points in degrees."""
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def path_length_m(points: Sequence[LatLon]) -> float:
    """Sum of great-circle distances between consecutive points."""
    return sum(haversine_m(p, q) for p, q in itertools.pairwise(points))


def initial_bearing_rad(a: LatLon, b: LatLon) -> float:
    """Direction from a towards b at a, radians clockwise from north."""
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    dlon = lon2 - lon1
    return math.atan2(
        math.sin(dlon) * math.cos(lat2),
        math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon),
    )


def along_track_m(point: LatLon, start: LatLon, end: LatLon) -> float:
    """How far along the great circle start -> end the point lies, in metres (signed).

    The foot of the perpendicular from the point: 0 at start, haversine(start, end) at end,
    negative before start. Exact on the sphere (Napier's rule for the right spherical
    triangle start-foot-point: tan(along) = tan(start-point) * cos(angle at start)).
    """
    if start == end:
        raise ValueError("along_track_m needs two different points to give a direction")
    reach = haversine_m(start, point) / EARTH_RADIUS_M
    if reach == 0:
        return 0.0
    angle = initial_bearing_rad(start, point) - initial_bearing_rad(start, end)
    return EARTH_RADIUS_M * math.atan2(math.sin(reach) * math.cos(angle), math.cos(reach))


def interpolate(a: LatLon, b: LatLon, fraction: float) -> LatLon:
    """Point at `fraction` (0..1) of the way from a to b along the great circle."""
    if fraction <= 0:
        return a
    if fraction >= 1:
        return b
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    delta = haversine_m(a, b) / EARTH_RADIUS_M
    if delta == 0:
        return a
    s = math.sin(delta)
    k1 = math.sin((1 - fraction) * delta) / s
    k2 = math.sin(fraction * delta) / s
    x = k1 * math.cos(lat1) * math.cos(lon1) + k2 * math.cos(lat2) * math.cos(lon2)
    y = k1 * math.cos(lat1) * math.sin(lon1) + k2 * math.cos(lat2) * math.sin(lon2)
    z = k1 * math.sin(lat1) + k2 * math.sin(lat2)
    return (math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x)))


def format_location(point: LatLon) -> str:
    """The "lat,lon" text form of a location used in fines (docs/reference.md, Outputs)."""
    return f"{point[0]:.6f},{point[1]:.6f}"
