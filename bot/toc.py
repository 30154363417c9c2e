"""A `pg_restore --list` listing, and the same listing without some of its entries (fed back
with `--use-list`): how hotdata leaves out what a restore must not or need not replay."""

from __future__ import annotations

import re
from collections.abc import Callable

from bot import tools

ENTRY = re.compile(r"^\d+; \d+ \d+ (.*)$")  # "<dump id>; <catalog oid> <oid> <desc> ..."


async def listing(archive: str, timeout: float = 600) -> str:
    """The archive's table of contents; raises ValueError with pg_restore's reason."""
    listed = await tools.run("pg_restore", "--list", archive, timeout=timeout)
    if listed.returncode != 0:
        raise ValueError(f"pg_restore --list failed: {listed.stderr.strip()[-300:]}")
    return listed.stdout


def without(text: str, skip: Callable[[str], bool]) -> tuple[str, list[str]]:
    """The listing without the entries `skip` picks (it sees "<type> <schema> <name> <owner>");
    and those entries."""
    kept, dropped = [], []
    for line in text.splitlines():
        entry = ENTRY.match(line)
        if entry and skip(entry.group(1)):
            dropped.append(entry.group(1))
            continue
        kept.append(line)
    return "\n".join(kept) + "\n", dropped
