"""An analysis requested in a channel: one at a time per channel, progress shown in place, the
summary posted, the full report uploaded and stored in the state schema."""

from __future__ import annotations

import json
import logging
import time

import psycopg
from psycopg.types.json import Jsonb

from bot.analysis.model import Analysis
from bot.analysis.pipeline import analyze
from bot.db import connect
from bot.render import analysis as render
from bot.services import Services
from bot.settings import Settings

log = logging.getLogger(__name__)

STALE_AFTER = "15 minutes"
PROGRESS_INTERVAL_S = 1.0


class AnalysisBusy(Exception):
    """An analysis is already running in this channel."""


async def claim(settings: Settings, channel: str, user: str) -> int:
    """Record a running analysis for `channel`, or raise AnalysisBusy naming the one running."""
    async with connect(settings, "state") as conn:
        await conn.execute(
            "UPDATE hotdata.analyses SET status = 'failed', finished_at = now(), "
            "error = 'abandoned: no result after " + STALE_AFTER + "' "
            "WHERE status = 'running' AND started_at < now() - %s::interval", (STALE_AFTER,))
        try:
            cur = await conn.execute(
                "INSERT INTO hotdata.analyses (channel, requested_by) VALUES (%s, %s) "
                "RETURNING id", (channel, user))
        except psycopg.errors.UniqueViolation:
            cur = await conn.execute(
                "SELECT requested_by, extract(epoch FROM now() - started_at)::int AS age "
                "FROM hotdata.analyses WHERE channel = %s AND status = 'running'", (channel,))
            row = await cur.fetchone()
            who = f"<@{row['requested_by']}>" if row else "someone"
            age = f" {row['age']} s ago" if row else ""
            raise AnalysisBusy(f"An analysis is already running in this channel (started by "
                               f"{who}{age}); its results will appear here.") from None
        row = await cur.fetchone()
        assert row is not None
        return int(row["id"])


async def finish(settings: Settings, analysis_id: int, analysis: Analysis) -> None:
    async with connect(settings, "state") as conn:
        await conn.execute(
            "UPDATE hotdata.analyses SET status = 'done', finished_at = now(), report = %s, "
            "markdown = %s WHERE id = %s",
            (Jsonb(json.loads(render.as_json(analysis))), render.markdown(analysis),
             analysis_id))


async def record(settings: Settings, analysis: Analysis, requested_by: str) -> int:
    """Store an analysis run outside Slack (the CLI) as done; its id."""
    async with connect(settings, "state") as conn:
        cur = await conn.execute(
            "INSERT INTO hotdata.analyses (requested_by, status, finished_at, report, markdown) "
            "VALUES (%s, 'done', now(), %s, %s) RETURNING id",
            (requested_by, Jsonb(json.loads(render.as_json(analysis))),
             render.markdown(analysis)))
        row = await cur.fetchone()
    assert row is not None
    analysis.id = int(row["id"])
    return analysis.id


async def fail(settings: Settings, analysis_id: int, error: str) -> None:
    async with connect(settings, "state") as conn:
        await conn.execute(
            "UPDATE hotdata.analyses SET status = 'failed', finished_at = now(), error = %s "
            "WHERE id = %s", (error, analysis_id))


async def run_in_channel(services: Services, channel: str, user: str, top: int) -> Analysis | None:
    """The whole Slack flow; raises AnalysisBusy before posting anything."""
    settings, client = services.settings, services.client
    analysis_id = await claim(settings, channel, user)
    ts: str | None = None
    try:
        posted = await client.chat_postMessage(
            channel=channel,
            text=f"<@{user}> asked for a query analysis: collecting the workload…")
        ts = message_ts = str(posted["ts"])
        last = 0.0

        async def progress(step: str) -> None:
            nonlocal last
            if time.monotonic() - last >= PROGRESS_INTERVAL_S:
                last = time.monotonic()
                await client.chat_update(channel=channel, ts=message_ts,
                                         text=f"Query analysis: {step}")

        analysis = await analyze(settings, top=top, progress=progress)
        analysis.id = analysis_id
        headline = (f"Query analysis: {len(analysis.results)} statements, "
                    f"{sum(len(r.findings) for r in analysis.results)} findings")
        await client.chat_update(channel=channel, ts=ts, text=headline,
                                 blocks=render.blocks(analysis))
        await finish(settings, analysis_id, analysis)
        await client.files_upload_v2(
            channel=channel, thread_ts=ts, filename=render.filename(analysis),
            title=f"Query performance analysis {analysis.collected_at[:10]}",
            content=render.markdown(analysis))
        return analysis
    except Exception as error:
        message = services.safe(f"Query analysis failed: {error}")
        await fail(settings, analysis_id, message)
        if ts is None:
            raise  # nothing in the channel yet: the requester is told instead
        log.warning("%s", message)
        await client.chat_update(channel=channel, ts=ts, text=f":x: {message}")
        return None
