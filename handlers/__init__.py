"""Thin Slack listeners: parse, authorize, ack, hand off to `bot/`."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services import Services
from handlers import actions, commands, views


def register_listeners(app: AsyncApp, services: Services) -> None:
    commands.register(app, services)
    actions.register(app, services)
    views.register(app, services)
