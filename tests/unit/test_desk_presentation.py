"""What the desk shows: a section's local time with UTC beside it, places in degrees."""

import jinja2

from desk.presentation import MIN_LOOK_MS, install, local_time, place, zone_of


def test_a_time_in_utc_is_labelled_utc_and_keeps_the_exact_instant():
    shown = local_time("2026-11-18T09:00:05.250Z")
    assert shown == '<time datetime="2026-11-18T09:00:05.250Z">2026-11-18 09:00:05 UTC</time>'


def test_a_section_zone_shows_its_local_time_with_utc_beside_it():
    assert local_time("2026-11-18T09:00:05.000Z", "Europe/Bratislava").endswith(
        ">2026-11-18 10:00:05 CET (09:00:05 UTC)</time>"
    )
    assert ">2026-07-01 05:00:00 EDT (09:00:00 UTC)<" in local_time(
        "2026-07-01T09:00:00.000Z", "America/New_York"
    )
    assert ">2026-01-01 09:00:00 GMT (UTC)<" in local_time("2026-01-01T09:00:00Z", "Europe/London")


def test_an_unknown_zone_or_text_that_is_no_time_is_shown_as_it_is_and_escaped():
    assert ">2026-11-18 09:00:00 UTC<" in local_time("2026-11-18T09:00:00Z", "Mars/Olympus")
    assert local_time("<b>soon</b>") == "&lt;b&gt;soon&lt;/b&gt;"
    assert local_time(None) == "unknown"


def test_a_place_is_degrees_with_hemispheres():
    assert place("40.7128,-74.006") == "40.71280° N, 74.00600° W"
    assert place("-33.8688,151.2093") == "33.86880° S, 151.20930° E"
    assert place("somewhere") == "somewhere"
    assert place(None) == "unknown"


def test_the_templates_get_the_filters_and_the_sections_zones():
    environment = jinja2.Environment(autoescape=True)
    install(environment, {"radar-ba": "Europe/Bratislava"})
    template = environment.from_string(
        "{{ t|local_time(zone_of(r)) }} at {{ p|place }} / {{ min_look_ms }}"
    )
    text = template.render(t="2026-11-18T09:00:00Z", r="radar-ba", p="48.1,17.1")
    assert text == (
        '<time datetime="2026-11-18T09:00:00Z">2026-11-18 10:00:00 CET (09:00:00 UTC)</time>'
        f" at 48.10000° N, 17.10000° E / {MIN_LOOK_MS}"
    )
    assert zone_of("radar-1") == "UTC"
