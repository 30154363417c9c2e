"""A pg_dump archive: the pg_restore that can read it, its `pg_restore --list` listing, and the
same listing without some of its entries (fed back with `--use-list`): how hotdata leaves out
what a restore must not or need not replay."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from bot import pgcluster, tools

ENTRY = re.compile(r"^\d+; \d+ \d+ (.*)$")  # "<dump id>; <catalog oid> <oid> <desc> ..."
MAGIC = b"PGDMP"


def dumped_by(archive: Path) -> int:
    """The major version of the pg_dump that wrote a custom- or directory-format archive, read
    from its header (the last of the strings after the creation time); 0 when unknown."""
    header = archive / "toc.dat" if archive.is_dir() else archive
    try:
        with open(header, "rb") as fh:
            data = fh.read(4096)
    except OSError:
        return 0
    if not data.startswith(MAGIC) or len(data) < 11:
        return 0
    version, int_size = (data[5], data[6]), data[8]
    at = 11 + (1 if version >= (1, 15) else 1 + int_size)  # compression: a byte, or an int
    at += 7 * (1 + int_size)  # the creation time, as seven ints

    def string() -> bytes:
        nonlocal at
        sign, size = data[at], int.from_bytes(data[at + 1:at + 1 + int_size], "little")
        at += 1 + int_size
        if sign or size > len(data):  # a NULL string
            return b""
        at += size
        return data[at - size:at]

    try:
        string(), string()  # the database's name, the server's version
        found = re.match(rb"(\d+)", string())
    except IndexError:
        return 0
    return int(found.group(1)) if found else 0


def restorer(archive: Path, into_major: int) -> str:
    """The pg_restore for `archive` into a server of major version `into_major`: at least as
    new as that server and as the pg_dump that wrote the archive."""
    return pgcluster.client_tool("pg_restore", max(dumped_by(archive), into_major))


async def listing(archive: str, pg_restore: str, timeout: float = 600) -> str:
    """The archive's table of contents; raises ValueError with pg_restore's reason."""
    listed = await tools.run(pg_restore, "--list", archive, timeout=timeout)
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
