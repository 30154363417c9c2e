"""Posting the report: blocks in the channel, the chart in its thread, paced per channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.container import Container
from bot.cron import cron_trigger, period
from bot.render import report as render
from bot.reports.report import Report, build, chart
from bot.settings import Settings


def window(settings: Settings) -> timedelta:
    """The report's window: the length of its cron slot that ended last."""
    return period(cron_trigger(settings.report_cron), datetime.now(UTC))


async def post(container: Container, channel: str | None = None) -> str:
    """Build and post the report (to `channel` or HOTDATA_CHANNEL); a short text of what was
    posted. Slack errors propagate after the client's own retries, to be recorded."""
    target = channel or container.settings.channel
    if not target:
        raise ValueError("HOTDATA_CHANNEL is not set: hotdata does not know where to post the "
                         "report")
    report = await build(container.settings, window(container.settings))
    await publish(container, report, target)
    return render.headline(report)


async def publish(container: Container, report: Report, channel: str) -> None:
    await container.pacer.wait(channel)
    posted = await container.client.chat_postMessage(channel=channel,
                                                    text=render.headline(report),
                                                    blocks=render.blocks(report))
    png = None if report.quiet else chart(report)
    if png is not None:
        await container.pacer.wait(channel)
        await container.client.files_upload_v2(
            channel=channel, thread_ts=posted["ts"], file=png,
            filename=f"hotdata-report-{report.window_end:%Y%m%d-%H%M}.png",
            title="Top statements, last 24 hours")
