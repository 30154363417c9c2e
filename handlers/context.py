"""What every listener needs besides Bolt's arguments: the container, a way to answer the
person who acted, and the hand-off of the work to a tracked task."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.container import Container
from bot.slack import Reply, describe

log = logging.getLogger(__name__)


def container_of(context: AsyncBoltContext) -> Container:
    container = context["container"]
    assert isinstance(container, Container), "bot.app's middleware puts the container here"
    return container


def respond_to(respond: AsyncRespond, container: Container) -> Reply:
    """An ephemeral answer through the request's response_url (commands and buttons)."""
    async def reply(text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        await respond(response_type="ephemeral", replace_original=False,
                      text=container.settings.scrub(text), blocks=blocks)
    return reply


def ephemeral_in(container: Container, channel: str | None, user: str) -> Reply:
    """An ephemeral message to `user` in `channel` (modals have no response_url)."""
    async def reply(text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        if not channel:
            log.warning("nowhere to tell %s: %s", user, container.settings.scrub(text))
            return
        await container.client.chat_postEphemeral(
            channel=channel, user=user, text=container.settings.scrub(text), blocks=blocks)
    return reply


def hand_off(container: Container, what: str, work: Coroutine[Any, Any, Any],
             reply: Reply) -> None:
    """Run `work` after the ack; if it fails, the person is told what failed."""
    async def failed(error: BaseException) -> None:
        await reply(describe(error, what))

    container.tasks.spawn(work, name=what, on_error=failed)
