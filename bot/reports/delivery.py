"""Posting the report: blocks in the channel, the chart in its thread, paced per channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.render import report as render
from bot.reports.report import Report, build, chart
from bot.services import Services


def window(services: Services) -> timedelta:
    from bot.schedule import period
    from bot.settings import cron_trigger

    return period(cron_trigger(services.settings.report_cron), datetime.now(UTC))


async def post(services: Services, channel: str | None = None) -> str:
    """Build and post the report (to `channel` or HOTDATA_CHANNEL); a short text of what was
    posted. Slack errors propagate after the client's own retries, to be recorded."""
    target = channel or services.settings.channel
    if not target:
        raise ValueError("HOTDATA_CHANNEL is not set: hotdata does not know where to post the "
                         "report")
    report = await build(services.settings, window(services))
    await publish(services, report, target)
    return render.headline(report)


async def publish(services: Services, report: Report, channel: str) -> None:
    await services.pace(channel)
    posted = await services.client.chat_postMessage(channel=channel,
                                                    text=render.headline(report),
                                                    blocks=render.blocks(report))
    png = None if report.quiet else chart(report)
    if png is not None:
        await services.pace(channel)
        await services.client.files_upload_v2(
            channel=channel, thread_ts=posted["ts"], file=png,
            filename=f"hotdata-report-{report.window_end:%Y%m%d-%H%M}.png",
            title="Top statements, last 24 hours")
