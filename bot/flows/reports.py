"""Posting the report: blocks in the channel, the charts in its thread, paced per channel; and
the scheduled snapshot, with its check of the backups announced in the channel."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from bot.container import Container
from bot.cron import cron_trigger, period
from bot.drills import history as drill_history
from bot.drills.sources import NoBackup
from bot.flows import drills
from bot.render import report as render
from bot.reports import backups, snapshots
from bot.reports.report import Report, build, chart
from bot.settings import Settings

log = logging.getLogger(__name__)


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
    await publish(container, report, target, await drills.history(container.settings))
    return render.headline(report)


async def publish(container: Container, report: Report, channel: str,
                  history: drill_history.History | None = None) -> None:
    """Post the report; in its thread the statements' chart and, with `history` (not in a
    quiet report), the drills' chart."""
    await container.pacer.wait(channel)
    posted = await container.client.chat_postMessage(channel=channel,
                                                    text=render.headline(report),
                                                    blocks=render.blocks(report, history))
    png = None if report.quiet else chart(report)
    if png is not None:
        await container.pacer.wait(channel)
        await container.client.files_upload_v2(
            channel=channel, thread_ts=posted["ts"], file=png,
            filename=f"hotdata-report-{report.window_end:%Y%m%d-%H%M}.png",
            title="Top statements, last 24 hours")
    if history is not None and not report.quiet:
        await drills.upload_chart(container, channel, str(posted["ts"]), history)


async def snapshot(container: Container) -> str:
    """The scheduled snapshot: the statistics, then the backups' health."""
    taken = await snapshots.take(container.settings)
    failing = [c.kind for c in await check_backups(container) if not c.ok]
    return (f"snapshot {taken}" if taken else "pg_stat_statements unavailable") + (
        f"; failing: {', '.join(failing)}" if failing else "; backups ok")


async def check_backups(container: Container) -> list[backups.Check]:
    """Check the newest backup and WAL archiving; post to HOTDATA_CHANNEL when a problem starts
    or ends (once: see bot.reports.backups)."""
    settings = container.settings
    newest = None
    if drill_history.watches_backups(settings):
        try:
            newest = backups.Newest(await drill_history.newest_backup(settings))
        except NoBackup as missing:
            newest = backups.Newest(problem=str(missing))

    async def announce(found: backups.Check) -> None:
        text = settings.scrub(render.backup_alert(found))
        if not settings.channel:
            log.warning("HOTDATA_CHANNEL is not set, so this is not posted: %s", text)
            return
        await container.pacer.wait(settings.channel)
        await container.client.chat_postMessage(channel=settings.channel, text=text)

    return await backups.check(settings, newest, announce)
