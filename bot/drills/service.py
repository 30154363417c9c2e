"""Drills from Slack and the CLI: progress in the channel, the result, the trend, the runbook."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bot.db import connect
from bot.drills import runner
from bot.drills.model import DrillResult
from bot.render import drill as render
from bot.services import Services
from bot.settings import Settings

PROGRESS_INTERVAL_S = 1.0
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


async def run_in_channel(services: Services, channel: str, user: str) -> DrillResult:
    """Raises runner.DrillRefused before posting anything."""
    client = services.client
    posted = await client.chat_postMessage(
        channel=channel, text=f"<@{user}> started a restore drill: preparing…")
    ts = str(posted["ts"])
    last = 0.0

    async def progress(step: str) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_INTERVAL_S:
            last = time.monotonic()
            await client.chat_update(channel=channel, ts=ts, text=f"Restore drill: {step}")

    try:
        result = await runner.run(services.settings, requested_by=user, progress=progress)
    except runner.DrillRefused as refused:
        await client.chat_update(channel=channel, ts=ts, text=f":no_entry: {refused}")
        raise
    await client.chat_update(channel=channel, ts=ts, text=render.headline(result),
                             blocks=render.blocks(result, await trend(services.settings)))
    return result


async def update_runbook(settings: Settings, path: Path) -> str:
    """Rewrite the runbook's "last measured" section from the latest passing drill."""
    async with connect(settings, "state") as conn:
        cur = await conn.execute(
            "SELECT result, finished_at FROM hotdata.drills WHERE status = 'passed' "
            "ORDER BY id DESC LIMIT 1")
        row = await cur.fetchone()
        cur = await conn.execute("SELECT current_setting('server_version') AS v")
        version = await cur.fetchone()
    if row is None:
        raise runner.DrillRefused("no passing drill yet: run `hotdata drill` first")
    text = path.read_text()
    if render.RUNBOOK_START not in text or render.RUNBOOK_END not in text:
        raise runner.DrillRefused(f"{path} has no '{render.RUNBOOK_START}' section")
    section = render.runbook_section(
        row["result"], f"{row['finished_at']:%Y-%m-%d %H:%M} UTC",
        f"PostgreSQL {version['v'] if version else '?'}")
    head, rest = text.split(render.RUNBOOK_START, 1)
    tail = rest.split(render.RUNBOOK_END, 1)[1]
    path.write_text(head + section + tail)
    return section
