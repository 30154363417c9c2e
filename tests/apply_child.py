"""A separate process that approves, and so applies, one index proposal, the way a running bot
does. tests/test_proposals.py kills it with SIGKILL in the middle of CREATE INDEX CONCURRENTLY.

Usage: python -m tests.apply_child DATABASE_URL SLACK_API_URL PROPOSAL_ID MANAGER_ID DIGEST
(DIGEST: the statement digest the card shows, as the Approve button carries it)
"""

from __future__ import annotations

import asyncio
import sys

from bot.container import Container
from bot.flows import approvals
from bot.settings import Settings
from bot.slack import web_client


async def main(database_url: str, slack_api_url: str, proposal_id: int, manager: str,
               digest: str) -> None:
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        database_url=database_url, slack_bot_token="xoxb-0000-child",
                        slack_api_url=slack_api_url, channel="C0HOTDATA", manager_ids=[manager])
    container = Container(settings, web_client(settings))
    try:
        print(await approvals.approve(container, proposal_id, manager, digest), flush=True)
    finally:
        await container.pools.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]))
