"""What the Slack handlers and the CLI call: one object holding settings, clients and tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient

from bot import checks
from bot.dsn import scrub
from bot.proposals.authz import Managers
from bot.settings import Settings
from bot.tasks import TaskTracker


@dataclass
class Services:
    settings: Settings
    client: AsyncWebClient
    tasks: TaskTracker = field(default_factory=TaskTracker)
    managers: Managers = field(init=False)

    def __post_init__(self) -> None:
        self.managers = Managers(self.settings, self.client)

    async def status(self) -> list[checks.Check]:
        return await checks.run_all(self.settings, self.client)

    def safe(self, text: str) -> str:
        """`text` without any configured secret, fit to post or log."""
        return scrub(text, self.settings.secrets())
