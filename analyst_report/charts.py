"""The page's charts, one PNG each, drawn from the queries' rows on matplotlib's Agg canvas."""

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from analyst_report.queries import Row, Totals
from section_speed.domain import defaults
from section_speed.domain.traversal import kmh_to_mph, mph_to_kmh

MAX_RADARS_CHARTED = 20
BAR_COLOUR, OVER_COLOUR = "#3b6ea8", "#e08a2c"
LIMIT_COLOUR, OTHER_LIMIT_COLOUR = "#c0392b", "#7f7f7f"
READ_COLOUR, UNREAD_COLOUR, PENDING_COLOUR = "#2e8b57", "#c8c8c8", "#f2d16b"
COUNTED_ONCE = (
    "Each traversal counts once: a late correction replaces its earlier row and a merged "
    "session the traversals it supersedes."
)


@dataclass(frozen=True)
class Section:
    """One chart of the page: its title, a sentence or two to read it, and the PNG."""

    key: str
    title: str
    explanation: str
    png: bytes


def _figure(height_in: float = 3.6) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(9.0, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the non-interactive Agg canvas: no display, no pyplot state
    axes = figure.add_subplot()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _no_data(axes: Axes, text: str, keep_x_ticks: bool = False) -> None:
    axes.text(0.5, 0.6, text, transform=axes.transAxes, ha="center", va="center", fontsize=13,
              color=OTHER_LIMIT_COLOUR, backgroundcolor="white")  # fmt: skip
    axes.set_yticks([])
    if not keep_x_ticks:
        axes.set_xticks([])


def count_phrase(n: int, noun: str) -> str:
    """`1 hour`, `3 hours`: explanations read as sentences."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def fines_per_hour_section(rows: Sequence[Row]) -> Section:
    """Bars of fines per hour of entry into the section (fines_per_hour.sql)."""
    figure, axes = _figure()
    axes.set_xlabel("hour the vehicle entered the section (UTC)")
    axes.set_ylabel("fines (count)")
    if not rows:
        _no_data(axes, "no fines in the warehouse yet")
        explanation = "No fines in the warehouse yet."
    else:
        hours = [row["hour"] for row in rows]
        counts = [row["fines"] for row in rows]
        axes.bar(mdates.date2num(hours), counts, width=0.9 / 24, align="edge", color=BAR_COLOUR)
        axes.set_xlim(
            mdates.date2num(min(hours) - timedelta(hours=1)),
            mdates.date2num(max(hours) + timedelta(hours=2)),
        )
        locator = mdates.AutoDateLocator(tz=UTC)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        peak = max(rows, key=lambda row: row["fines"])
        explanation = (
            f"{count_phrase(sum(counts), 'fine')} over {count_phrase(len(rows), 'hour')} "
            "with fines, by the hour the vehicle "
            f"entered the section (UTC). Busiest hour: {_utc(peak['hour'])} with "
            f"{peak['fines']} fines. {COUNTED_ONCE}"
        )
    return Section("fines-per-hour", "Fines per hour", explanation, _png(figure))


def fines_per_radar_section(rows: Sequence[Row]) -> Section:
    """Horizontal bars of fines per radar, most fined on top (fines_per_radar.sql)."""
    shown = list(rows[:MAX_RADARS_CHARTED])
    figure, axes = _figure(max(2.4, 0.45 * len(shown) + 1.3))
    axes.set_xlabel("fines (count)")
    axes.set_ylabel("radar (section)")
    if not shown:
        _no_data(axes, "no fines in the warehouse yet")
        explanation = "No fines in the warehouse yet."
    else:
        shown.reverse()  # barh draws bottom-up: the most fined radar ends on top
        names = [str(row["radar_id"]) for row in shown]
        counts = [row["fines"] for row in shown]
        bars = axes.barh(names, counts, color=BAR_COLOUR)
        labels = [f"{row['fines']}  (mean {row['mean_speed_mph']:.1f} mph)" for row in shown]
        axes.bar_label(bars, labels=labels, padding=4, fontsize=9)
        axes.set_xlim(0, max(counts) * 1.35)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        top = rows[0]
        explanation = (
            f"Fines per radar (a radar is one section), most fined first; each bar's label "
            f"gives the mean average speed of its fines. "
            f"{count_phrase(len(rows), 'radar')} with fines; the most: {top['radar_id']} "
            f"with {top['fines']}."
        )
        if len(rows) > len(shown):
            explanation += f" The chart shows the top {len(shown)}."
    return Section("fines-per-radar", "Fines per radar", explanation, _png(figure))


def fines_per_limit_source_section(rows: Sequence[Row]) -> Section:
    """Bars of fines per limit source, most first (fines_per_limit_source.sql)."""
    figure, axes = _figure(max(2.4, 0.45 * len(rows) + 1.3))
    axes.set_xlabel("fines (count)")
    axes.set_ylabel("limit source")
    if not rows:
        _no_data(axes, "no fines in the warehouse yet")
        explanation = "No fines in the warehouse yet."
    else:
        shown = list(reversed(rows))  # the most common on top
        bars = axes.barh([str(row["limit_source"]) for row in shown],
                         [row["fines"] for row in shown], color=BAR_COLOUR)  # fmt: skip
        labels = [f"{row['fines']}  (mean limit {row['mean_limit_mph']:.1f} mph)" for row in shown]
        axes.bar_label(bars, labels=labels, padding=4, fontsize=9)
        axes.set_xlim(0, max(row["fines"] for row in rows) * 1.45)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        explanation = (
            "Fines per source of the limit applied: the section's default, a weekly window "
            "(school hours), a temporary limit (roadworks), a signal, or the vehicle class's "
            "own limit; where the limit changed during a traversal, the highest applied. "
            + ", ".join(f"{row['limit_source']}: {row['fines']}" for row in rows)
            + "."
        )
    return Section("fines-per-limit-source", "Fines per limit source", explanation, _png(figure))


@dataclass(frozen=True)
class SpeedLimits:
    """The limits in force according to the data: the most common one is marked."""

    most_common_mph: float
    radars_by_limit: dict[float, set[str]]
    from_data: bool


def speed_limits(rows: Sequence[Row]) -> SpeedLimits:
    """Limits per radar from speed_distribution.sql; the default limit when there is none."""
    radars: dict[float, set[str]] = {}
    traversals: Counter[float] = Counter()
    for row in rows:
        if row["speed_limit_mph"] is None:
            continue
        limit = float(row["speed_limit_mph"])
        radars.setdefault(limit, set()).add(str(row["radar_id"]))
        traversals[limit] += row["traversals"]
    if not radars:
        return SpeedLimits(defaults.SPEED_LIMIT_MPH, {}, from_data=False)
    # Most radars first, then most traversals, then the lower limit: deterministic.
    most_common = max(radars, key=lambda limit: (len(radars[limit]), traversals[limit], -limit))
    return SpeedLimits(most_common, radars, from_data=True)


def speed_distribution_section(rows: Sequence[Row]) -> Section:
    """Histogram of average speeds in 1 mph bins, limit(s) marked (speed_distribution.sql).

    Traversals are coloured by the pipeline's own verdict (`is_ticketed`), not by their
    bin: a vehicle at exactly the limit shares a bin with fined ones but was not fined.
    """
    limits = speed_limits(rows)
    under: Counter[int] = Counter()
    over: Counter[int] = Counter()
    for row in rows:
        side = over if row["is_ticketed"] else under
        side[int(row["speed_bin_mph"])] += row["traversals"]
    figure, axes = _figure(4.2)
    axes.set_xlabel("average speed over the section (mph), 1 mph bins")
    axes.set_ylabel("traversals (count)")
    kmh_axis = axes.secondary_xaxis("top", functions=(mph_to_kmh, kmh_to_mph))
    kmh_axis.set_xlabel("average speed (km/h)")
    limit = limits.most_common_mph
    if limits.from_data:
        radar_count = sum(len(radars) for radars in limits.radars_by_limit.values())
        where = f"on {len(limits.radars_by_limit[limit])} of {radar_count} radars"
        label = f"speed limit {limit:g} mph ({where})"
    else:
        where, label = "no data, the default", f"default speed limit {limit:g} mph (no data)"
    axes.axvline(limit, color=LIMIT_COLOUR, linewidth=2.5, label=label)
    axes.annotate(f"limit {limit:g} mph", (limit, 1.0), xycoords=("data", "axes fraction"),
                  xytext=(4, -2), textcoords="offset points", va="top", color=LIMIT_COLOUR,
                  fontweight="bold")  # fmt: skip
    others = sorted(set(limits.radars_by_limit) - {limit})
    for other in others:
        radars = ", ".join(sorted(limits.radars_by_limit[other]))
        axes.axvline(other, color=OTHER_LIMIT_COLOUR, linestyle="--", linewidth=1.5,
                     label=f"limit {other:g} mph ({radars})")  # fmt: skip
    total = sum(under.values()) + sum(over.values())
    if not total:
        _no_data(axes, "no traversals in the warehouse yet", keep_x_ticks=True)
        axes.set_xlim(0, limit * 2)
        explanation = "No measured traversals in the warehouse yet."
    else:
        sides = ((under, BAR_COLOUR, "not fined"), (over, OVER_COLOUR, "fined (over the limit)"))
        for counts, colour, name in sides:
            bins = sorted(counts)
            below = [under[b] if counts is over else 0 for b in bins]  # stack over on under
            axes.bar(bins, [counts[b] for b in bins], bottom=below, width=0.9, align="edge",
                     color=colour, label=f"traversals {name}")  # fmt: skip
        edges = [*under, *over, *limits.radars_by_limit]
        axes.set_xlim(min(edges) - 2, max(edges) + 3)
        tallest = max(under[b] + over[b] for b in {*under, *over})
        axes.set_ylim(0, tallest * 1.15)  # headroom for the limit's label above the bars
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        explanation = (
            f"Section average speed (distance over the time between the first and the last "
            f"camera) of all {total} measured traversals, fined or not; "
            f"{sum(over.values())} were fined (over their section's limit plus tolerance). "
            f"The red line is "
            f"the speed limit of {limit:g} mph ({mph_to_kmh(limit):.1f} km/h), {where}."
        )
        if others:
            explanation += " Dashed lines mark the other sections' limits."
    figure.legend(loc="outside lower center", ncol=2, frameon=False, fontsize=9)
    return Section("speed-distribution", "Average speeds", explanation, _png(figure))


def plate_read_section(totals: Totals) -> Section:
    """One 100 % bar: fines with a plate read, not read, evidence not in yet (summary.sql)."""
    figure, axes = _figure(1.9)
    axes.spines["left"].set_visible(False)
    axes.set_xlabel("share of fines (%)")
    axes.set_xlim(0, 100)
    axes.xaxis.set_major_formatter(PercentFormatter())
    axes.set_yticks([])
    fines, read, pending = totals.fines, totals.plates_read, totals.fines_without_evidence
    if not fines:
        _no_data(axes, "no fines in the warehouse yet", keep_x_ticks=True)
        explanation = "No fines in the warehouse yet."
    else:
        left = 0.0
        for count, colour, what in (
            (read, READ_COLOUR, "plate read"),
            (fines - read - pending, UNREAD_COLOUR, "plate not read"),
            (pending, PENDING_COLOUR, "evidence not in yet"),
        ):
            if count or colour != PENDING_COLOUR:  # the pending part only when there is one
                width = 100.0 * count / fines
                axes.barh([0], [width], left=[left], color=colour,
                          label=f"{what}: {count} of {fines} ({width:.0f} %)")  # fmt: skip
                left += width
        figure.legend(loc="outside lower center", ncol=3, frameon=False, fontsize=9)
        share = 100.0 * read / fines
        explanation = (
            f"{read} of {fines} fines have a licence plate read ({share:.0f} %). "
            "A fine without a plate cannot be sent to the vehicle's owner."
        )
        if pending:
            explanation += (
                f" {count_phrase(pending, 'fine')} still without evidence (plate and photo) in the "
                "warehouse: the fine is measured, its evidence row not yet written."
            )
        if not read:
            explanation += " No plate has been read yet."
    return Section("plates-read", "Share of plates read", explanation, _png(figure))
