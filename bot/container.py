"""What the listeners, the flows and the scheduler share, held in one place: settings, the Web
API client, the task tracker, the pace of posts, who the managers are, and a connection pool
per database role. It holds; it does nothing itself (see ARCHITECTURE.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient

from bot.db import Pools
from bot.settings import Settings
from bot.slack import Managers, Pacer
from bot.tasks import TaskTracker


@dataclass
class Container:
    settings: Settings
    client: AsyncWebClient
    tasks: TaskTracker = field(default_factory=TaskTracker)
    pacer: Pacer = field(default_factory=Pacer)
    managers: Managers = field(init=False)
    pools: Pools = field(init=False)

    def __post_init__(self) -> None:
        self.managers = Managers(self.settings, self.client)
        self.pools = Pools(self.settings)
