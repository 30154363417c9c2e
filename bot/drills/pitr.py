"""Point-in-time drills (pgBackRest or Barman, HOTDATA_DRILL_TARGET=random or a timestamp): a
target inside the recoverable window; and every such copy's `recovery` check: replayed to the
archive's end, or stopped at the target.

PostgreSQL stops at a target time only when it replays a transaction committed after it; one
that the archive lacks ends recovery with "recovery target not reached". So the window ends at
a heartbeat the drill writes and waits to see archived: from the oldest backup's end to that
heartbeat, every moment is reachable.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime

from bot.catalog import TAG
from bot.db import connect
from bot.drills import facts, store
from bot.drills.model import Check
from bot.drills.sources import NoBackup
from bot.drills.sources.physical import Latest
from bot.settings import Settings, target_time

ARCHIVE_WAIT_S = 600
POLL_S = 0.5
# After the heartbeat's commit: the WAL file its commit record is in, or an earlier one.
SEGMENT_SQL = TAG + "SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS segment"
ARCHIVED_SQL = TAG + "SELECT last_archived_wal AS wal FROM pg_stat_archiver"
RECOVERY_SQL = TAG + ("SELECT pg_is_in_recovery() AS standby, "
                      "pg_last_xact_replay_timestamp() AS replayed")


def _archived(last: str | None, segment: str) -> bool:
    """Whether WAL file `segment` is in the archive, given pg_stat_archiver's last file (which
    may be a backup history file named after the segment it starts in)."""
    if not last:
        return False
    return last[:24] > segment or last == segment


async def archived_mark(settings: Settings) -> datetime:
    """Write a heartbeat and wait until the archive holds it; its time ends the window."""
    async with connect(settings, "state") as state:
        mark = await store.heartbeat(state)
        assert mark is not None
        segment = (await (await state.execute(SEGMENT_SQL)).fetchone() or {})["segment"]
    deadline = time.monotonic() + ARCHIVE_WAIT_S
    async with connect(settings, "analysis") as source:
        while True:
            last = (await (await source.execute(ARCHIVED_SQL)).fetchone() or {}).get("wal")
            if _archived(last, segment):
                return mark
            if time.monotonic() > deadline:
                raise NoBackup(
                    f"the archive did not receive WAL file {segment} (written at "
                    f"{mark:%H:%M:%S %Z}) within {ARCHIVE_WAIT_S // 60} minutes: set "
                    "archive_timeout on the source (60 s is usual) so every moment is "
                    "archived soon after it")
            await asyncio.sleep(POLL_S)


async def target(settings: Settings, start: datetime) -> datetime:
    """The drill's target inside [start, a heartbeat now archived): a random moment, or the
    one HOTDATA_DRILL_TARGET names (refused before any wait when it precedes the window)."""
    explicit = None if settings.drill_target == "random" else target_time(settings.drill_target)
    if explicit is not None and explicit < start:
        raise NoBackup(f"the target {explicit.isoformat()} is outside the recoverable window: "
                       f"the oldest backup ends at {start:%Y-%m-%d %H:%M:%S %Z}")
    end = await archived_mark(settings)
    if explicit is not None:
        if explicit >= end:
            raise NoBackup(f"the target {explicit.isoformat()} is outside the recoverable "
                           f"window: the archive ends at {end:%Y-%m-%d %H:%M:%S %Z}")
        return explicit
    if end <= start:
        raise NoBackup(f"no recoverable window: the oldest backup ends at "
                       f"{start:%Y-%m-%d %H:%M:%S %Z}, the archive at {end:%H:%M:%S %Z}")
    return start + (end - start) * random.random()


async def check(settings: Settings, dsn: str, backup: Latest,
                target: datetime | None) -> Check:
    """Did the copy recover: out of recovery after replaying the archive to its end (promoted,
    or at the end of the WAL Barman restored into pg_wal), or (with `target`) with its last
    replayed transaction and its heartbeat no later than the target."""
    async with connect(settings, "migrator", dsn=dsn) as conn:
        row = await (await conn.execute(RECOVERY_SQL)).fetchone()
        beat = await (await conn.execute(facts.HEARTBEAT_SQL)).fetchone()
    assert row is not None
    replayed, heartbeat = row["replayed"], beat["at"] if beat else None
    if target is None:
        since = (f", last transaction replayed from {replayed:%Y-%m-%d %H:%M:%S %Z}"
                 if replayed else "")
        return Check("recovery", not row["standby"],
                     f"backup {backup.label} restored, archived WAL replayed to its end "
                     f"({backup.archive_max}){since}, out of recovery")
    when = f"PITR to {target:%Y-%m-%d %H:%M:%S.%f %Z}"
    if row["standby"]:
        return Check("recovery", False, f"{when}: the copy did not promote")
    late = [what for what, at in (("a transaction", replayed), ("hotdata's heartbeat",
                                                                 heartbeat))
            if at is not None and at > target]
    if late:
        return Check("recovery", False, f"{when}: the copy holds {' and '.join(late)} from "
                     f"after the target (last replayed {replayed:%H:%M:%S.%f})")
    # No transaction replayed: none committed between the backup's end and the target.
    closest = replayed or backup.stopped_at
    last = (f"last transaction replayed {replayed:%H:%M:%S.%f}, none after it" if replayed
            else "no transaction committed between the backup's end and the target")
    return Check("recovery", True, (
        f"{when}: recovered within {(target - closest).total_seconds():.1f} s of the target "
        f"from backup {backup.label} ({last}), promoted"))
