"""`/hotdata status`: hotdata's health checks, to the person who asked."""

from __future__ import annotations

from bot import checks
from bot.container import Container
from bot.render import status as render
from bot.slack import Reply


async def status(container: Container, reply: Reply) -> list[checks.Check]:
    found = await checks.run_all(container.settings, container.client)
    await reply(render.headline(found), render.blocks(found))
    return found
