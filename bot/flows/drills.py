"""Drills from Slack and the CLI: progress in the channel, the result with its trend, and the
recovery runbook's last-measured section."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bot.container import Container
from bot.db import DatabaseUnavailable, connect
from bot.drills import runner, store
from bot.drills.model import DrillResult
from bot.render import drill as render
from bot.settings import Settings

PROGRESS_INTERVAL_S = 1.0


async def run_in_channel(container: Container, channel: str, user: str) -> DrillResult:
    """Progress in one message, which ends with the result, or with why the drill could not
    run (the error is raised too, for the person who asked)."""
    client = container.client
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
        result = await runner.run(container.settings, requested_by=user, progress=progress)
    except Exception as error:  # never left at "preparing…"
        text = (f":no_entry: {error}" if isinstance(error, runner.DrillRefused)
                else f":x: Restore drill failed: {error}")
        await client.chat_update(channel=channel, ts=ts, text=container.settings.scrub(text))
        raise
    try:
        trend = await _trend(container)
    except DatabaseUnavailable:  # the result stands without its history
        trend = []
    await client.chat_update(channel=channel, ts=ts, text=render.headline(result),
                             blocks=render.blocks(result, trend))
    return result


async def _trend(container: Container) -> list[dict[str, Any]]:
    async with container.pools.connection("state") as state:
        return await store.trend(state)


async def update_runbook(settings: Settings, path: Path) -> str:
    """Rewrite the runbook's "last measured" section from the latest passing drill."""
    async with connect(settings, "state") as state:
        row, version = await store.latest_passed(state)
    if row is None:
        raise runner.DrillRefused("no passing drill yet: run `hotdata drill` first")
    text = path.read_text()
    if render.RUNBOOK_START not in text or render.RUNBOOK_END not in text:
        raise runner.DrillRefused(f"{path} has no '{render.RUNBOOK_START}' section")
    section = render.runbook_section(
        row["result"], f"{row['finished_at']:%Y-%m-%d %H:%M} UTC",
        f"PostgreSQL {version}")
    head, rest = text.split(render.RUNBOOK_START, 1)
    tail = rest.split(render.RUNBOOK_END, 1)[1]
    path.write_text(head + section + tail)
    return section
