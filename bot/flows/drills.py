"""Drills from Slack and the CLI: progress in the channel, the result with its trend, the
history of the last drills (table, chart, forecast), and the recovery runbook's last-measured
section."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bot.container import Container
from bot.db import DatabaseUnavailable, connect
from bot.drills import history as drill_history
from bot.drills import runner, store
from bot.drills.model import DrillResult
from bot.flows import home
from bot.render import drill as render
from bot.settings import Settings
from bot.slack import Reply

PROGRESS_INTERVAL_S = 1.0
HISTORY = 10  # drills in `/hotdata drill history` and in the report
MAX_HISTORY = 50


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
        await home.refresh_all(container)  # the failed drill is the Home's last drill now
        raise
    try:
        trend = await _trend(container)
    except DatabaseUnavailable:  # the result stands without its history
        trend = []
    await client.chat_update(channel=channel, ts=ts, text=render.headline(result),
                             blocks=render.blocks(result, trend))
    await home.refresh_all(container)
    return result


async def _trend(container: Container) -> list[dict[str, Any]]:
    async with container.pools.connection("state") as state:
        return await store.history(state, store.TREND)


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


async def history(settings: Settings, limit: int = HISTORY) -> drill_history.History:
    async with connect(settings, "state") as state:
        return await drill_history.load(state, settings, limit)


async def history_in_channel(container: Container, reply: Reply, channel: str,
                             limit: int) -> drill_history.History:
    """The last `limit` drills in the channel, their chart in its thread; without any, the
    person who asked is told how to get some."""
    async with container.pools.connection("state") as state:
        found = await drill_history.load(state, container.settings, limit)
    if not found.drills:
        await reply(render.NO_HISTORY)
        return found
    await container.pacer.wait(channel)
    posted = await container.client.chat_postMessage(
        channel=channel, text=render.history_headline(found), blocks=render.history_blocks(found))
    await upload_chart(container, channel, str(posted["ts"]), found)
    return found


async def upload_chart(container: Container, channel: str, thread_ts: str,
                       found: drill_history.History) -> None:
    png = drill_history.chart(found)
    if png is None:
        return
    await container.pacer.wait(channel)
    await container.client.files_upload_v2(
        channel=channel, thread_ts=thread_ts, file=png,
        filename=f"hotdata-drills-{found.drills[-1].id}.png",
        title=f"Restore drills: RTO, RPO and phases of the last {len(found.drills)}")
