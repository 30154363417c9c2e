"""The pace of posts: a post waits only for the previous post in its own channel."""

from __future__ import annotations

import asyncio

from bot.slack import Pacer


async def test_a_channel_waits_for_itself_never_for_another() -> None:
    pacer = Pacer(interval=3600.0)  # a second post to one channel would wait an hour
    await pacer.wait("C0FIRST")
    again = asyncio.create_task(pacer.wait("C0FIRST"))
    await asyncio.wait_for(pacer.wait("C0OTHER"), timeout=30)  # not behind C0FIRST's wait
    await asyncio.wait_for(pacer.wait("C0THIRD"), timeout=30)
    assert not again.done()  # C0FIRST's second post is still waiting its turn
    again.cancel()
