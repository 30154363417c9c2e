"""Restore drills over time, and the newest backup.

- `analyse`: the last drills' RTO and RPO with their phases; how the RTO grows per GB restored
  (least squares over the passing drills); how fast the database grows (bytes restored per
  day, fitted the same way); and when, at that growth, the fitted RTO reaches
  HOTDATA_RTO_TARGET_SECONDS. `chart` draws it.
- `newest_backup`: when the newest backup of HOTDATA_DRILL_SOURCE was taken, so that a backup
  job that stopped is noticed between drills.
"""

from __future__ import annotations

import asyncio
import io
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot import pgcluster, tools
from bot.db import Conn
from bot.drills import store
from bot.drills.sources import NoBackup, barman, directory, pgbackrest
from bot.settings import Settings

GB = 2**30  # as bot.units.size_text counts
DAY_S = 86400.0
HORIZON_DAYS = 3650.0  # a crossing further away than this is not forecast


@dataclass(frozen=True)
class Drill:
    id: int
    status: str
    finished_at: datetime
    rto_seconds: float | None
    rpo_seconds: float | None
    bytes_restored: int
    phases: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class History:
    """The drills oldest first, the fitted trends and the forecast.

    `outlook` says which forecast there is: `crossing` (at `crossing`), `over` (the fitted RTO
    at the latest size is past the target already), or why there is none: `no_target`,
    `few_drills` (fewer than two passing drills of different sizes), `flat_rto` (the RTO does
    not grow with size), `flat_size` (the database does not grow), `distant` (more than ten
    years away)."""

    drills: list[Drill]
    target_seconds: float | None
    seconds_per_gb: float | None = None
    base_seconds: float | None = None  # the fitted RTO of an empty database
    growth_per_day: float | None = None  # bytes
    outlook: str = "few_drills"
    crossing: datetime | None = None
    size_at_target: float | None = None  # bytes at which the fitted RTO is the target

    def rto_at(self, size: float) -> float | None:
        """The fitted RTO for `size` bytes restored."""
        if self.seconds_per_gb is None or self.base_seconds is None:
            return None
        return self.base_seconds + self.seconds_per_gb * size / GB


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares y = a + b·x: (a, b); None without two distinct x."""
    try:
        slope, intercept = statistics.linear_regression([x for x, _ in points],
                                                        [y for _, y in points])
    except statistics.StatisticsError:  # fewer than two points, or every x the same
        return None
    return intercept, slope


def analyse(drills: list[Drill], target_seconds: float | None) -> History:
    """The trends and forecast of `drills` (oldest first)."""
    found = History(drills, target_seconds)
    sized = [d for d in drills if d.status == "passed" and d.rto_seconds is not None
             and d.bytes_restored > 0]
    rto = fit([(d.bytes_restored / GB, float(d.rto_seconds or 0)) for d in sized])
    growth = fit([(d.finished_at.timestamp() / DAY_S, float(d.bytes_restored)) for d in sized])
    if rto is not None:
        found.base_seconds, found.seconds_per_gb = rto
    if growth is not None:
        found.growth_per_day = growth[1]
    if target_seconds is None:
        found.outlook = "no_target"
    elif rto is None:
        found.outlook = "few_drills"
    elif rto[1] <= 0:
        found.outlook = "flat_rto"
    else:
        latest = sized[-1]
        found.size_at_target = (target_seconds - rto[0]) / rto[1] * GB
        if found.size_at_target <= latest.bytes_restored:
            found.outlook = "over"
        elif growth is None or growth[1] <= 0:
            found.outlook = "flat_size"
        else:
            days = (found.size_at_target - latest.bytes_restored) / growth[1]
            if days > HORIZON_DAYS:
                found.outlook = "distant"
            else:
                found.outlook = "crossing"
                found.crossing = latest.finished_at + timedelta(days=days)
    return found


def drill(row: dict[str, Any]) -> Drill:
    """A drill from a row of `store.history`."""
    return Drill(int(row["id"]), row["status"], row["finished_at"], row["rto_seconds"],
                 row["rpo_seconds"], int(row["bytes_restored"]),
                 [(str(p["name"]), float(p["seconds"])) for p in row["phases"]])


async def load(conn: Conn, settings: Settings, limit: int) -> History:
    """The last `limit` drills, analysed against the settings' RTO target."""
    rows = await store.history(conn, limit)
    return analyse([drill(row) for row in reversed(rows)], settings.rto_target_seconds)


def chart(history: History) -> bytes | None:
    """PNG: each drill's phases stacked, its RTO and RPO, and the RTO against the GB restored
    with the fitted line and the target."""
    if not history.drills:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    drills = history.drills
    figure, (bars, sizes) = pyplot.subplots(2, 1, figsize=(9, 7))
    places = list(range(len(drills)))
    names = list(dict.fromkeys(name for d in drills for name, _ in d.phases))
    bottom = [0.0] * len(drills)
    for name in names:
        values = [sum(s for n, s in d.phases if n == name) for d in drills]
        bars.bar(places, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    nan = float("nan")
    bars.plot(places, [d.rto_seconds if d.rto_seconds is not None else nan for d in drills],
              color="black", marker="o", linestyle="", label="RTO")
    bars.plot(places, [d.rpo_seconds if d.rpo_seconds is not None else nan for d in drills],
              color="purple", marker="s", label="RPO")
    if history.target_seconds is not None:
        bars.axhline(history.target_seconds, color="crimson", linestyle="--",
                     label="RTO target")
        sizes.axhline(history.target_seconds, color="crimson", linestyle="--")
    bars.set_xticks(places, [f"#{d.id}" + ("" if d.status == "passed" else " (failed)")
                             for d in drills], fontsize=7)
    highest = max([*bottom, *(d.rto_seconds or 0 for d in drills),
                   *(d.rpo_seconds or 0 for d in drills), history.target_seconds or 0])
    bars.set_ylim(0, highest * 1.3 or 1)  # room for the legend above the bars
    bars.set_ylabel("seconds")
    bars.legend(fontsize=7, loc="upper left", ncol=3)
    passed = [d for d in drills if d.status == "passed" and d.rto_seconds is not None]
    sizes.scatter([d.bytes_restored / GB for d in passed], [d.rto_seconds for d in passed],
                  color="black")
    if history.seconds_per_gb is not None and passed:
        right = max([d.bytes_restored for d in passed] + [history.size_at_target or 0]) / GB
        sizes.plot([0, right], [history.rto_at(0), history.rto_at(right * GB)],
                   color="steelblue", label=f"{history.seconds_per_gb:.1f} s per GB")
        sizes.legend(fontsize=7, loc="upper left")
    sizes.set_xlabel("GB restored")
    sizes.set_ylabel("RTO seconds")
    figure.suptitle(f"Restore drills: the last {len(drills)}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    return buffer.getvalue()


# --- the newest backup --------------------------------------------------------------------------

async def _directory(settings: Settings) -> datetime | None:
    if settings.drill_backup_dir is None:
        raise NoBackup("HOTDATA_DRILL_BACKUP_DIR is not set")
    return (await asyncio.to_thread(directory.newest, settings.drill_backup_dir)).taken_at


async def _pgbackrest(settings: Settings) -> datetime | None:
    if settings.drill_pgbackrest_stanza is None:
        raise NoBackup("HOTDATA_DRILL_PGBACKREST_STANZA is not set")
    try:
        found = await pgbackrest.backups(settings, pgcluster.server_user())
    except (tools.ToolMissing, pgcluster.ClusterError) as error:
        raise NoBackup(f"cannot read the pgBackRest repository: {error}") from None
    return found[-1].stopped_at


# How each HOTDATA_DRILL_SOURCE tells when its newest backup was taken: a source whose backups
# another job takes adds its reader here. `dump` has none (each drill takes its own backup).
async def _barman(settings: Settings) -> datetime | None:
    """The newest completed backup in Barman's catalog, once `barman check` passes (a failing
    check is a backup problem too, named in Barman's words)."""
    if settings.drill_barman_server is None:
        raise NoBackup("HOTDATA_DRILL_BARMAN_SERVER is not set")
    try:
        found = await barman.backups(settings, barman.owner(settings))
    except (tools.ToolMissing, pgcluster.ClusterError) as error:
        raise NoBackup(f"cannot read Barman's catalog: {error}") from None
    return found[-1].stopped_at


NEWEST_BACKUP: dict[str, Callable[[Settings], Awaitable[datetime | None]]] = {
    "directory": _directory,
    "pgbackrest": _pgbackrest,
    "barman": _barman,
}


def watches_backups(settings: Settings) -> bool:
    """Whether the source's backups are taken by someone else, and so can stop."""
    return settings.drill_source in NEWEST_BACKUP


async def newest_backup(settings: Settings) -> datetime | None:
    """When the newest backup was taken (None when that is unknown); NoBackup when there is
    none, or it cannot be read."""
    return await NEWEST_BACKUP[settings.drill_source](settings)
