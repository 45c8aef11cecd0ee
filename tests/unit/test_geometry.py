"""Distances and positions along a section (section_speed/domain/geometry.py)."""

import math

import pytest

from section_speed.domain import defaults
from section_speed.domain.geometry import (
    along_track_m,
    haversine_m,
    interpolate,
    path_length_m,
)
from tests.helpers import ENTRY, EXIT

# --- geometry -----------------------------------------------------------------------


def test_one_degree_of_latitude_is_111_2_km():
    assert haversine_m((0.0, 0.0), (1.0, 0.0)) == pytest.approx(111_195.08, rel=1e-6)


def test_points_one_km_apart_measure_one_km_within_0_1_percent():
    # 1 km north of a point in Manhattan: 1000 m / (R * pi / 180) degrees of latitude.
    one_km_deg = 1000 / (6_371_008.8 * math.pi / 180)
    start = (40.8, -73.95)
    assert haversine_m(start, (start[0] + one_km_deg, start[1])) == pytest.approx(1000, rel=1e-3)


def test_known_city_distance_paris_london():
    # Paris (48.8566, 2.3522) to London (51.5074, -0.1278): 343.5 km great circle.
    assert haversine_m((48.8566, 2.3522), (51.5074, -0.1278)) / 1000 == pytest.approx(
        343.5, abs=0.5
    )


def test_interpolated_points_lie_on_the_path():
    a, b = defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES
    points = [interpolate(a, b, i / 4) for i in range(5)]
    assert points[0] == a and points[-1] == b
    assert path_length_m(points) == pytest.approx(haversine_m(a, b), rel=1e-9)


def test_along_track_is_the_distance_along_the_section():
    length = haversine_m(ENTRY, EXIT)
    assert length == pytest.approx(303.8395578, abs=1e-6)
    for fraction in (0.0, 0.25, 0.5, 1.0):
        point = interpolate(ENTRY, EXIT, fraction)
        assert along_track_m(point, ENTRY, EXIT) == pytest.approx(fraction * length, abs=1e-6)
    assert along_track_m(ENTRY, EXIT, ENTRY) == pytest.approx(length, abs=1e-6)  # reversed


def test_along_track_beside_and_before_the_section_matches_a_flat_projection():
    # Over 300 m the Earth is flat to a millimetre: project on a local east/north plane.
    metres_per_deg_lat = math.pi / 180 * 6_371_008.8
    metres_per_deg_lon = metres_per_deg_lat * math.cos(math.radians(ENTRY[0]))

    def flat(point):
        return (
            (point[1] - ENTRY[1]) * metres_per_deg_lon,
            (point[0] - ENTRY[0]) * metres_per_deg_lat,
        )

    ex, ey = flat(EXIT)
    for point in [(40.8190, -73.9420), (40.8200, -73.9400), (40.8170, -73.9420)]:
        px, py = flat(point)
        expected = (px * ex + py * ey) / math.hypot(ex, ey)
        assert along_track_m(point, ENTRY, EXIT) == pytest.approx(expected, abs=0.05)
    assert along_track_m((40.8200, -73.9400), ENTRY, EXIT) < 0  # before the entry
    with pytest.raises(ValueError, match="two different points"):
        along_track_m(ENTRY, EXIT, EXIT)
