"""Drills in the state schema: the heartbeat whose restored age is the RPO, and past results."""

from __future__ import annotations

from typing import Any

from bot.db import connect
from bot.settings import Settings

HEARTBEAT_SQL = ("INSERT INTO hotdata.heartbeat (id, at) VALUES (1, clock_timestamp()) "
                 "ON CONFLICT (id) DO UPDATE SET at = excluded.at")


async def heartbeat(settings: Settings) -> None:
    """The row whose restored age is the RPO (written every minute by `hotdata serve`)."""
    async with connect(settings, "state") as conn:
        await conn.execute(HEARTBEAT_SQL)


async def trend(settings: Settings, limit: int = 5) -> list[dict[str, Any]]:
    async with connect(settings, "state") as conn:
        cur = await conn.execute(
            "SELECT id, status, rto_seconds, rpo_seconds FROM hotdata.drills "
            "WHERE status <> 'running' ORDER BY id DESC LIMIT %s", (limit,))
        return await cur.fetchall()


async def latest_passed(settings: Settings) -> tuple[dict[str, Any] | None, str]:
    """The latest passing drill (result, finished_at), or None; and the server's version."""
    async with connect(settings, "state") as conn:
        cur = await conn.execute(
            "SELECT result, finished_at FROM hotdata.drills WHERE status = 'passed' "
            "ORDER BY id DESC LIMIT 1")
        row = await cur.fetchone()
        cur = await conn.execute("SELECT current_setting('server_version') AS v")
        version = await cur.fetchone()
    return row, version["v"] if version else "?"
