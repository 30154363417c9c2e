"""Backups that stopped, noticed without a drill: at every statistics snapshot the newest
backup's age (against HOTDATA_BACKUP_MAX_AGE_HOURS) and WAL archiving (pg_stat_archiver) are
checked. A problem is announced once when it starts and once when it ends: each kind's
`alerting` in hotdata.backup_alerts flips under its row's lock, in the transaction that
announces it, so two checks at once (two leaders for a moment) announce it once, and an
announcement that fails is made again at the next check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from bot.catalog import TAG
from bot.db import Conn, connect
from bot.settings import Settings

ARCHIVER_SQL = TAG + """
SELECT current_setting('archive_mode') AS mode, failed_count, last_archived_wal,
       last_archived_time, last_failed_wal, last_failed_time
FROM pg_stat_archiver
"""


@dataclass(frozen=True)
class Newest:
    """What the backup source says of its newest backup."""

    taken_at: datetime | None = None
    problem: str | None = None  # why there is none (or it cannot be read)


@dataclass
class Check:
    """One kind (`backup` or `archiving`) as checked now; `figures` are what the report and
    the messages show (JSON: timestamps as ISO text)."""

    kind: str
    ok: bool
    figures: dict[str, Any]
    checked_at: datetime
    alerting: bool = False  # whether its alert stands after this check
    changed: bool = False  # this check started or ended the alert


Announce = Callable[[Check], Awaitable[None]]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def backup_check(source: str, newest: Newest | None, max_age_hours: float,
                 now: datetime) -> Check:
    """The newest backup against the age limit; always ok when the source takes no backups of
    its own to watch (`newest` None: a `dump` drill takes one each time)."""
    if newest is None:
        return Check("backup", True, {"source": source, "watched": False}, now)
    age = (now - newest.taken_at).total_seconds() if newest.taken_at is not None else None
    figures = {"source": source, "watched": True, "taken_at": _iso(newest.taken_at),
               "max_age_s": max_age_hours * 3600, "problem": newest.problem}
    ok = newest.problem is None and (age is None or age <= max_age_hours * 3600)
    return Check("backup", ok, figures, now)


def archiving_check(archiver: dict[str, Any], previous: dict[str, Any], now: datetime) -> Check:
    """Archiving fails when its last failure is newer than its last success. pg_stat_archiver
    counts failures since its reset only, so the count at the last healthy check is kept to
    tell how many came since."""
    archived, failed = archiver["last_archived_time"], archiver["last_failed_time"]
    failing = archiver["mode"] != "off" and failed is not None and (
        archived is None or failed > archived)
    count = int(archiver["failed_count"])
    baseline = int(previous.get("failed_at_success") or 0)
    if baseline > count:  # the statistics were reset
        baseline = 0
    figures = {"mode": archiver["mode"], "failing": failing,
               "failures": count - baseline if failing else 0,
               "failed_at_success": baseline if failing else count,
               "last_archived_wal": archiver["last_archived_wal"],
               "last_archived_at": _iso(archived),
               "last_failed_wal": archiver["last_failed_wal"], "last_failed_at": _iso(failed)}
    return Check("archiving", not failing, figures, now)


async def check(settings: Settings, newest: Newest | None, announce: Announce) -> list[Check]:
    """Check both kinds now and record them; `announce` each that started or ended its alert
    (while its row is locked: when it raises, nothing is recorded and the next check
    announces again)."""
    async with connect(settings, "analysis") as target:
        archiver = await (await target.execute(ARCHIVER_SQL)).fetchone()
    assert archiver is not None
    now = datetime.now(UTC)
    found = []
    async with connect(settings, "state") as state:
        for kind in ("backup", "archiving"):
            async with state.transaction():
                cur = await state.execute("SELECT alerting, figures FROM hotdata.backup_alerts "
                                          "WHERE kind = %s FOR UPDATE", (kind,))
                row = await cur.fetchone()
                assert row is not None, "migration 0010 inserts both kinds"
                done = (backup_check(settings.drill_source, newest,
                                     settings.backup_max_age_hours, now)
                        if kind == "backup" else archiving_check(archiver, row["figures"], now))
                done.changed = row["alerting"] == done.ok
                done.alerting = not done.ok
                if done.changed:
                    await announce(done)
                await state.execute(
                    "UPDATE hotdata.backup_alerts SET alerting = %s, figures = %s, "
                    "checked_at = %s, changed_at = CASE WHEN %s THEN %s ELSE changed_at END "
                    "WHERE kind = %s",
                    (done.alerting, Jsonb(done.figures), now, done.changed, now, kind))
            found.append(done)
    return found


async def latest(state: Conn) -> list[dict[str, Any]]:
    """The last check of each kind (kind, alerting, changed_at, checked_at, figures)."""
    cur = await state.execute(
        "SELECT kind, alerting, changed_at, checked_at, figures FROM hotdata.backup_alerts "
        "WHERE checked_at IS NOT NULL ORDER BY kind DESC")
    return await cur.fetchall()
