"""Great-circle geometry on WGS84 coordinates."""

import itertools
import math
from collections.abc import Sequence

# Mean Earth radius (IUGG), the radius DESIGN.md §3 fixes for every distance.
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
    """The "lat,lon" text form of a location used in fines (DESIGN.md §4)."""
    return f"{point[0]:.6f},{point[1]:.6f}"
