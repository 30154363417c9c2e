"""An analysis requested in a channel: one at a time per channel, progress shown in place, the
summary posted, the full report uploaded and stored in the state schema."""

from __future__ import annotations

import logging
import time

import psycopg

from bot.advisor.pipeline import analyze
from bot.analysis import plan_history, runs
from bot.analysis.model import Analysis
from bot.container import Container
from bot.db import DatabaseUnavailable, connect
from bot.flows import home
from bot.render import analysis as render
from bot.render import plans as render_plans
from bot.settings import Settings
from bot.slack import Reply

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0


def _limits(settings: Settings) -> plan_history.Limits:
    return plan_history.Limits(settings.plan_regression_ratio, settings.plan_regression_min_ms)


async def record(settings: Settings, analysis: Analysis, requested_by: str) -> int:
    """Store an analysis run outside Slack (the CLI) as done, with its plan regressions and
    plan shapes; its id, also set on it."""
    async with connect(settings, "state") as state:
        await plan_history.regressions(state, analysis, _limits(settings))
        analysis.id = await runs.record(state, render.as_json(analysis),
                                        render.markdown(analysis), requested_by)
        await plan_history.keep(state, analysis.id, analysis)
    return analysis.id


async def compare(container: Container, reply: Reply) -> None:
    """`/hotdata analyze compare`: the last two analyses, statement by statement."""
    async with container.pools.connection("state") as state:
        found = await plan_history.compare_latest(state)
    await reply(render_plans.comparison(found, container.settings.plan_regression_ratio))


async def run_in_channel(container: Container, channel: str, user: str,
                         top: int) -> Analysis | None:
    """The whole Slack flow; raises AnalysisBusy before posting anything."""
    settings, client, pools = container.settings, container.client, container.pools
    async with pools.connection("state") as state:
        analysis_id = await runs.claim(state, channel, user)
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
        try:  # stored before it is shown: the channel never shows what was not kept
            async with pools.connection("state") as state:
                await plan_history.regressions(state, analysis, _limits(settings))
                await runs.finish(state, analysis_id, render.as_json(analysis),
                                  render.markdown(analysis), ts)
                await plan_history.keep(state, analysis_id, analysis)
        except (DatabaseUnavailable, psycopg.Error) as error:
            analysis.notes.insert(0, settings.scrub(
                f"not stored ({error}): `/hotdata propose` cannot use this analysis; run it "
                "again once hotdata's state database is back"))
        headline = (f"Query analysis: {len(analysis.results)} statements, "
                    f"{sum(len(r.findings) for r in analysis.results)} findings")
        await client.chat_update(channel=channel, ts=ts, text=headline,
                                 blocks=render.blocks(analysis))
        await client.files_upload_v2(
            channel=channel, thread_ts=ts, filename=render.filename(analysis),
            title=f"Query performance analysis {analysis.collected_at[:10]}",
            content=render.markdown(analysis))
        await home.refresh_all(container)
        return analysis
    except Exception as error:
        message = container.settings.scrub(f"Query analysis failed: {error}")
        try:
            async with pools.connection("state") as state:
                await runs.fail(state, analysis_id, message)
        except (DatabaseUnavailable, psycopg.Error):  # it is abandoned after STALE_AFTER
            log.warning("could not record the failure of analysis %s", analysis_id)
        if ts is None:
            raise  # nothing in the channel yet: the requester is told instead
        log.warning("%s", message)
        await client.chat_update(channel=channel, ts=ts, text=f":x: {message}")
        return None
