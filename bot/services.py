"""What the Slack handlers and the CLI call: one object holding settings, clients and tasks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient

from bot import checks
from bot.dsn import scrub
from bot.proposals.authz import Managers
from bot.settings import Settings
from bot.tasks import TaskTracker

POST_INTERVAL_S = 1.0


@dataclass
class Services:
    settings: Settings
    client: AsyncWebClient
    tasks: TaskTracker = field(default_factory=TaskTracker)
    managers: Managers = field(init=False)
    _posted: dict[str, float] = field(default_factory=dict, init=False)
    _pacing: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self.managers = Managers(self.settings, self.client)

    async def pace(self, channel: str) -> None:
        """At most about one message per second per channel (Slack's posting limit)."""
        async with self._pacing:
            wait = self._posted.get(channel, 0.0) + POST_INTERVAL_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._posted[channel] = time.monotonic()

    async def status(self) -> list[checks.Check]:
        return await checks.run_all(self.settings, self.client)

    def safe(self, text: str) -> str:
        """`text` without any configured secret, fit to post or log."""
        return scrub(text, self.settings.secrets())
