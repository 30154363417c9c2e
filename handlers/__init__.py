"""Thin Slack listeners: parse, authorize, ack, hand off to `bot/` (see ARCHITECTURE.md).

Each listener is a module-level function Bolt calls with what it asks for; the container
reaches it through Bolt's `context`, where `bot.app` puts it. Nothing touches a database or
the Web API before `ack()`: with `process_before_response`, Bolt answers Slack only when the
listener returns, so the work is handed to a tracked task.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers import actions, commands, events, views


def register_listeners(app: AsyncApp) -> None:
    commands.register(app)
    actions.register(app)
    views.register(app)
    events.register(app)
