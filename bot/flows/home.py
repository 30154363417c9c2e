"""The App Home tab, published for a person when they open it and again, for everyone who
opened it lately, when something it shows changes (a proposal decided, applied, expired)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot import checks
from bot.container import Container
from bot.cron import cron_trigger, next_fire
from bot.drills import store as drills
from bot.proposals import store
from bot.proposals.model import Proposal
from bot.render import home as render
from bot.render import status

log = logging.getLogger(__name__)

VIEWERS_DAYS = 7  # a Home opened this recently is kept up to date

LATEST_SQL = """
SELECT id, channel, message_ts, finished_at, report FROM hotdata.analyses
WHERE status = 'done' ORDER BY id DESC LIMIT 1
"""


async def opened(container: Container, user: str) -> None:
    """`app_home_opened`: remember the viewer, publish their Home."""
    async with container.pools.connection("state") as conn:
        await conn.execute(
            "INSERT INTO hotdata.home_viewers (user_id) VALUES (%s) ON CONFLICT (user_id) "
            "DO UPDATE SET opened_at = now()", (user,))
    await publish(container, user)


@dataclass
class _Shown:
    """What every Home shows alike; only the buttons depend on the person."""

    analysis: dict[str, Any] | None
    proposals: list[Proposal]
    drills: list[dict[str, Any]]
    next_runs: dict[str, datetime | None]
    health: str


async def _shown(container: Container) -> _Shown:
    settings = container.settings
    async with container.pools.connection("state") as conn:
        cur = await conn.execute(LATEST_SQL)
        analysis = await cur.fetchone()
        proposals = await store.recent(conn)
        for proposal in proposals:
            if proposal["status"] == "pending" and proposal["approvals_required"] > 1:
                proposal["approvers"] = await store.approvers(conn, proposal)
        trend = await drills.history(conn, drills.TREND)
    if analysis is not None and analysis["channel"] and analysis["message_ts"]:
        try:  # a link to the analysis' thread; without it, the Home names the channel
            found = await container.client.chat_getPermalink(channel=analysis["channel"],
                                                             message_ts=analysis["message_ts"])
            analysis["permalink"] = found.get("permalink")
        except Exception as error:
            log.warning("no link to analysis #%s: %s", analysis["id"],
                        settings.scrub(str(error)))
    now = datetime.now(UTC)
    next_runs = {job: next_fire(cron_trigger(expression), now)
                 for job, expression in settings.scheduled_jobs.items()}
    health = status.headline(await checks.run_all(settings, container.client))
    return _Shown(analysis, proposals, trend, next_runs, health)


async def publish(container: Container, user: str, shown: _Shown | None = None) -> None:
    """Publish `user`'s Home, from `shown` when it was gathered already."""
    shown = shown or await _shown(container)
    view = render.view(analysis=shown.analysis, proposals=shown.proposals,
                       manager=await container.managers.is_manager(user), drills=shown.drills,
                       next_runs=shown.next_runs, health=shown.health)
    await container.client.views_publish(user_id=user, view=view)


async def refresh_all(container: Container) -> None:
    """Publish again for everyone who opened their Home lately, from one reading of what it
    shows. Best effort: errors (Slack's, the state database's) are logged, never raised into
    the change that caused them."""
    try:
        async with container.pools.connection("state") as conn:
            cur = await conn.execute(
                "SELECT user_id FROM hotdata.home_viewers "
                "WHERE opened_at > now() - make_interval(days => %s)", (VIEWERS_DAYS,))
            viewers = [row["user_id"] for row in await cur.fetchall()]
        shown = await _shown(container) if viewers else None
    except Exception as error:
        log.warning("could not refresh the Home tabs: %s", container.settings.scrub(str(error)))
        return
    for user in viewers:
        try:
            await publish(container, user, shown)
        except Exception as error:
            log.warning("could not update the Home of %s: %s", user,
                        container.settings.scrub(str(error)))
