"""`dump`: take the backup now — roles with pg_dumpall, data with a parallel directory-format
pg_dump from a snapshot exported by a transaction that reads the source's facts in that same
snapshot, so the counts compared after the restore are exactly what the dump holds. Both tools
are those of the source server's version, or newer (`pgcluster.client_tool`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from psycopg import sql

from bot import pgcluster, tools
from bot.catalog import TAG
from bot.db import connect
from bot.drills import facts as drill_facts
from bot.drills.model import Backup
from bot.settings import Settings
from bot.tools import conninfo_and_env

DUMP_TIMEOUT_S = 6 * 3600


class DumpFailed(Exception):
    """pg_dump or pg_dumpall failed; the message carries their stderr."""


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def take(settings: Settings, workdir: Path) -> Backup:
    conninfo, env = conninfo_and_env(settings.database_url)
    globals_sql, target = workdir / "globals.sql", workdir / "dump"
    async with connect(settings, "analysis") as conn:
        major = conn.info.server_version // 10000  # the tools must be at least as new
        roles = await tools.run(pgcluster.client_tool("pg_dumpall", major), "--roles-only",
                                "--no-role-passwords", "--dbname", conninfo,
                                "--file", str(globals_sql), timeout=600, env=env)
        if roles.returncode != 0:
            raise DumpFailed(f"pg_dumpall --roles-only failed: {roles.stderr.strip()[-500:]}")
        pg_dump = pgcluster.client_tool("pg_dump", major)
        async with conn.transaction():
            await conn.execute(TAG + "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur = await conn.execute(TAG + "SELECT pg_export_snapshot() AS snapshot, now() AS at")
            row = await cur.fetchone()
            assert row is not None
            await conn.execute(sql.SQL(TAG + "SET LOCAL statement_timeout = 0"))
            facts = await drill_facts.read(
                conn, fingerprint_max_bytes=int(settings.drill_fingerprint_max_mb * 1024 * 1024),
                app_role=settings.app_role, claims=settings.app_jwt_claims)
            done = await tools.run(pg_dump, "--format=directory", f"--jobs={settings.drill_jobs}",
                                   f"--snapshot={row['snapshot']}", "--file", str(target),
                                   "--dbname", conninfo, timeout=DUMP_TIMEOUT_S, env=env)
    if done.returncode != 0:
        raise DumpFailed(f"pg_dump failed: {done.stderr.strip()[-500:]}")
    return Backup("dump", target, globals_sql, row["at"].astimezone(UTC) if row["at"] else
                  datetime.now(UTC), facts, _size(target))
