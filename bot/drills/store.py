"""Drills in the state schema: the heartbeat whose restored age is the RPO, and past results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.db import Conn

HEARTBEAT_SQL = ("INSERT INTO hotdata.heartbeat (id, at) VALUES (1, clock_timestamp()) "
                 "ON CONFLICT (id) DO UPDATE SET at = excluded.at")


async def heartbeat(conn: Conn, *, unless_within: str | None = None) -> datetime | None:
    """The row whose restored age is the RPO (written every minute by `hotdata serve`); with
    `unless_within` (an interval such as '2 minutes'), only when none is that recent. The
    time written, if it was."""
    if unless_within is None:
        cur = await conn.execute(HEARTBEAT_SQL + " RETURNING at")
    else:
        cur = await conn.execute(HEARTBEAT_SQL + " WHERE hotdata.heartbeat.at < "
                                 "clock_timestamp() - %s::interval RETURNING at",
                                 (unless_within,))
    row = await cur.fetchone()
    return row["at"] if row else None


async def latest_passed(conn: Conn) -> tuple[dict[str, Any] | None, str]:
    """The latest passing drill (result, finished_at), or None; and the server's version."""
    cur = await conn.execute(
        "SELECT result, finished_at FROM hotdata.drills WHERE status = 'passed' "
        "ORDER BY id DESC LIMIT 1")
    row = await cur.fetchone()
    cur = await conn.execute("SELECT current_setting('server_version') AS v")
    version = await cur.fetchone()
    return row, version["v"] if version else "?"


TREND = 5  # drills shown beside a drill's result and on the Home tab


async def history(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """The last `limit` finished drills, newest first, with their bytes restored and phases."""
    cur = await conn.execute(
        "SELECT id, status, coalesce(finished_at, started_at) AS finished_at, rto_seconds, "
        "rpo_seconds, coalesce((result->>'bytes_restored')::bigint, 0) AS bytes_restored, "
        "coalesce(result->'phases', '[]') AS phases FROM hotdata.drills "
        "WHERE status <> 'running' ORDER BY id DESC LIMIT %s", (limit,))
    return await cur.fetchall()
