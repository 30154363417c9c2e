"""Who may decide: the ids in HOTDATA_MANAGER_IDS and the members of HOTDATA_MANAGER_GROUP."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings

log = logging.getLogger(__name__)

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
