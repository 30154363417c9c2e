"""Restore-drill overhead: hotdata's full drill against a bare dump and restore of the same data.

Builds a source database of about `--size-gb` GB (the HotDash sample plus a wide `events`
table) on one throwaway cluster and uses a second throwaway cluster as the scratch server.
In the same run it times:

- `bare_seconds`: `pg_dumpall --roles-only` + `psql` + `pg_dump --format=directory --jobs=2` +
  `createdb` + `pg_restore --jobs=2`;
- `drill_seconds`: `hotdata`'s drill (roles, snapshot dump, restore, verification of counts,
  fingerprints, indexes with amcheck, RLS policies, grants and probes, cleanup).

Target (from the issue): the drill takes at most 1.3 times the bare dump and restore.
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from common import logger

from bot import migrate, pgcluster
from bot.db import connect
from bot.drills import runner
from bot.drills.store import heartbeat
from bot.sample import hotdash
from bot.settings import Settings

EVENT_ROW_BYTES = 140  # about what one generated `events` row takes on disk


log = logger("drill_overhead")


def build_source(cluster: pgcluster.Cluster, size_gb: float) -> int:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE app")
    with psycopg.connect(cluster.dsn("app"), autocommit=True) as conn:
        hotdash.load(conn, scale=1.0)
        have = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        rows = max(0, int((size_gb * 2**30 - have) / EVENT_ROW_BYTES))
        log(f"HotDash loaded ({have / 2**20:.0f} MB); adding {rows:,} event rows")
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, account int NOT NULL, "
                     "kind text NOT NULL, created_at timestamptz NOT NULL, payload text)")
        conn.execute("INSERT INTO events SELECT g, g %% 5000, 'kind' || (g %% 7), "
                     "now() - g * interval '1 second', md5(g::text) || md5((g * 7)::text) "
                     "FROM generate_series(1, %s) g", (rows,))
        conn.execute("VACUUM ANALYZE events")
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def bare(source: pgcluster.Cluster, scratch: pgcluster.Cluster, work: Path) -> float:
    """Roles, then data: what a restore needs at the least (policies and grants name roles)."""
    started = time.perf_counter()
    dump = work / "bare"
    roles = work / "globals.sql"
    subprocess.run(["pg_dumpall", "--roles-only", "--no-role-passwords", "--file", str(roles),
                    "--dbname", source.dsn()], check=True)
    subprocess.run(["psql", "--no-psqlrc", "--quiet", "--dbname", scratch.dsn(), "--file",
                    str(roles)], check=True, capture_output=True)
    subprocess.run(["pg_dump", "--format=directory", "--jobs=2", "--file", str(dump),
                    "--dbname", source.dsn("app")], check=True)
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bare_restore")
    subprocess.run(["pg_restore", "--jobs=2", "--dbname", scratch.dsn("bare_restore"),
                    str(dump)], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE bare_restore WITH (FORCE)")
    shutil.rmtree(dump, ignore_errors=True)
    return seconds


async def drill(settings: Settings) -> tuple[float, runner.DrillResult]:
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
        await heartbeat(conn)
    started = time.perf_counter()
    result = await runner.run(settings, requested_by="bench")
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    args = parser.parse_args()
    source = pgcluster.create()
    scratch = pgcluster.create()
    work = Path(tempfile.mkdtemp(prefix="hotdata-drill-bench-"))
    try:
        size = build_source(source, args.size_gb)
        log(f"source database: {size / 2**30:.2f} GB")
        settings = Settings(_env_file=None,  # type: ignore[call-arg]
                            database_url=source.url("app"), drill_database_url=scratch.url())
        bare_s = bare(source, scratch, work)
        log(f"bare dump + restore: {bare_s:.1f} s")
        drill_s, result = asyncio.run(drill(settings))
        log(f"hotdata drill: {drill_s:.1f} s, {result.status}")
        print(json.dumps({
            "database_bytes": size, "bare_dump_restore_s": round(bare_s, 2),
            "drill_s": round(drill_s, 2), "ratio": round(drill_s / bare_s, 3),
            "drill_status": result.status,
            "phases": {p.name: p.seconds for p in result.phases},
            "rows_verified": result.rows_verified,
            "target_met": drill_s <= 1.3 * bare_s,
        }))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        scratch.destroy()
        source.destroy()


if __name__ == "__main__":
    sys.exit(main())
