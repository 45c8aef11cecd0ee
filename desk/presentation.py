"""What the desk's pages show, apart from what they hold: times in the section's own time
zone with UTC beside them, places as degrees, and the minimum time a photo is on screen
before a decision key counts.

Registered on the templates' Jinja environment by `install` (desk/app.py). A section's
time zone will come from the sections file; until a section names one, its times are
shown in UTC and say so.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from markupsafe import Markup

from desk.workflow import MIN_LOOK_MS  # the page's keys wait for what the server enforces
from section_speed.domain.events import parse_rfc3339_ms

DEFAULT_ZONE = "UTC"


def zone_of(radar_id: str, zones: Mapping[str, str] | None = None) -> str:
    """The IANA time zone a section's times are shown in: its own, else UTC."""
    return (zones or {}).get(radar_id, DEFAULT_ZONE)


def local_time(text: str | None, zone: str = DEFAULT_ZONE) -> Markup:
    """`2026-11-18T09:00:00.000Z` as the section's local time with UTC beside it, in a
    <time> element carrying the exact instant: "2026-11-18 10:00:00 CET (09:00:00 UTC)".
    A time in UTC itself is shown once, labelled UTC."""
    if not text:
        return Markup("unknown")
    try:
        instant = datetime.fromtimestamp(parse_rfc3339_ms(text) / 1000, UTC)
    except ValueError:
        return Markup("{}").format(text)
    try:
        local = instant.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        local, zone = instant, DEFAULT_ZONE
    shown = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
    if zone != DEFAULT_ZONE and local.utcoffset():
        shown += f" ({instant:%H:%M:%S} UTC)"
    elif zone != DEFAULT_ZONE:
        shown += " (UTC)"
    return Markup('<time datetime="{}">{}</time>').format(text, shown)


def place(location: str | None) -> str:
    """A detection's "lat,lon" as degrees with their hemispheres: "40.71280° N, 74.00600° W".
    Text that is not a pair of numbers is shown as it is (the template escapes it)."""
    try:
        lat, lon = (float(part) for part in str(location).split(","))
    except ValueError:
        return str(location or "unknown")  # autoescaped by the template
    north, east = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    return f"{abs(lat):.5f}° {north}, {abs(lon):.5f}° {east}"


def install(environment: jinja2.Environment, zones: Mapping[str, str] | None = None) -> None:
    """The filters and values the templates use: `local_time`, `place`, `zone_of`,
    `min_look_ms`."""
    environment.filters["local_time"] = local_time
    environment.filters["place"] = place
    environment.globals["zone_of"] = lambda radar_id: zone_of(radar_id, zones)
    environment.globals["min_look_ms"] = MIN_LOOK_MS
