"""Talking to Slack's Web API: the client (HOTDATA_SLACK_API_URL, retries on 429 and 5xx), the
pace of posts per channel, and who the managers are."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import UserError
from bot.settings import Settings

log = logging.getLogger(__name__)

POST_INTERVAL_S = 1.0
NOT_IN_CHANNEL = "hotdata is not a member of this channel: invite it with `/invite @hotdata`"


def describe(error: BaseException, what: str) -> str:
    """The text a person reads when `what` (a command, a click) ended in `error`: a UserError
    as it is, anything else as what could not be finished and why. Scrub it with the
    settings' secrets before it is shown."""
    if isinstance(error, UserError):
        return str(error)
    reason = str(error) or type(error).__name__
    if isinstance(error, SlackApiError) and error.response.get("error") in (
            "not_in_channel", "channel_not_found"):
        reason = NOT_IN_CHANNEL
    return f"hotdata could not finish `{what}`: {reason}"


class Reply(Protocol):
    """The answer only the person who asked sees (an ephemeral message)."""

    def __call__(self, text: str, blocks: list[dict[str, Any]] | None = None
                 ) -> Awaitable[None]: ...


def retry_handlers() -> list[AsyncRetryHandler]:
    """Retry-After on 429, a few retries on 5xx and dropped connections."""
    return [AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=3),
            AsyncConnectionErrorRetryHandler(max_retry_count=2)]


def web_client(settings: Settings) -> AsyncWebClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return AsyncWebClient(token=token, base_url=settings.slack_api_url,
                          retry_handlers=retry_handlers(), timeout=15)


class Pacer:
    """At most about one message per second per channel (Slack's posting limit): a post waits
    only for the previous post in its own channel."""

    def __init__(self, interval: float = POST_INTERVAL_S) -> None:
        self.interval = interval
        self._posted: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, channel: str) -> None:
        async with self._locks.setdefault(channel, asyncio.Lock()):
            wait = self._posted.get(channel, 0.0) + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._posted[channel] = time.monotonic()


GROUP_CACHE_SECONDS = 60.0


class Managers:
    """Answers `is_manager(user)`; fails closed when the user group cannot be read."""

    def __init__(self, settings: Settings, client: AsyncWebClient) -> None:
        self.settings = settings
        self.client = client
        self._group: set[str] = set()
        self._fetched = float("-inf")

    async def _group_members(self) -> set[str]:
        if not self.settings.manager_group:
            return set()
        if time.monotonic() - self._fetched < GROUP_CACHE_SECONDS:
            return self._group
        try:
            # POST, like every other call hotdata makes (Slack accepts both verbs)
            answer = await self.client.api_call("usergroups.users.list", data={
                "usergroup": self.settings.manager_group})
        except Exception as error:  # any failure (an error, a non-JSON body, no network)
            reason = (error.response.get("error") if isinstance(error, SlackApiError)
                      and isinstance(error.response.data, dict) else None) or str(error)
            log.warning("cannot read manager group %s: %s", self.settings.manager_group,
                        reason.splitlines()[0] if reason else type(error).__name__)
            return set()  # fail closed: nobody is a manager through the group
        self._group = set(answer.get("users") or [])
        self._fetched = time.monotonic()
        return self._group

    async def is_manager(self, user: str) -> bool:
        return user in self.settings.manager_ids or user in await self._group_members()

    async def refusal(self, user: str, proposed_by: str | None) -> str | None:
        """Why `user` may not decide this proposal, or None when they may."""
        if not await self.is_manager(user):
            return ("Only managers may approve or reject index migrations "
                    "(HOTDATA_MANAGER_IDS or HOTDATA_MANAGER_GROUP).")
        if user == proposed_by and not self.settings.allow_self_approval:
            return ("You proposed this migration: another manager must decide it "
                    "(or set HOTDATA_ALLOW_SELF_APPROVAL=true).")
        return None
