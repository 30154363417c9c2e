"""Events: `app_home_opened` publishes the person's Home tab (after the ack Bolt sends)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.flows import home
from handlers.context import container_of


async def home_opened(event: dict[str, Any], context: AsyncBoltContext) -> None:
    if event.get("tab", "home") != "home" or not event.get("user"):
        return
    container = container_of(context)
    container.tasks.spawn(home.opened(container, str(event["user"])), name="home")


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(home_opened)
