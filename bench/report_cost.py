"""Report cost: how long `report.build` takes, and how many queries it sends to the target,
with 5,000 distinct statements in pg_stat_statements and 48 snapshots in the state database.

What it measures: a throwaway PostgreSQL (`bot.pgcluster`) gets a target database with 500
small tables (t_aaa…, no digits in the names: see bench/analyze_scale.py) and runs the ten
statement shapes of bench/analyze_scale.py once on each table, with parameters through the
extended protocol — 5,000 distinct entries in pg_stat_statements. hotdata's state lives in a
database of its own on the same server. 48 snapshots are taken with `snapshots.take`, a few of
the statements running between two of them, and are spread half an hour apart over the last
24 hours (as a `*/30` snapshot schedule would have left them). Then, in this process:

- `report_seconds`: the wall time of `bot.reports.report.build(settings, 2 hours)` — it takes
  the window's closing snapshot (5,000 rows copied), computes the window's and the previous
  window's deltas, the chart series, proposals, drill, missed slots and health;
- `queries_to_target`: the statements it sent to the target, counted by pg_stat_statements
  (the calls of statements tagged `/* hotdata */` in the target database, before and after);
  `queries_to_target_reported` is the report's own `queries_to_target`;
- the same again with 500 statements (50 tables), to show the count does not grow with them.

Targets: `report_seconds` under 2 s, and a number of queries that does not depend on the number
of statements (`queries_to_target` equal to `queries_to_target_with_500_statements`).

Usage:

    .venv/bin/python bench/report_cost.py [--statements 5000] [--snapshots 48]
        [--spacing-minutes 30] [--seed 42]

Prints one JSON object on stdout: `{"statements", "snapshots", "report_seconds",
"queries_to_target", "queries_to_target_with_500_statements", …}` (a few extra diagnostic keys
follow). Progress and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analyze_scale import SHAPES, SHAPES_PER_TABLE, Shape, table_names
from common import forget_configuration, logger, positive

from bot import migrate, pgcluster
from bot.db import connect
from bot.reports import snapshots
from bot.reports.report import build, chart
from bot.settings import Settings

ROWS_PER_TABLE = 200
ACCOUNTS = 50
BETWEEN_SNAPSHOTS = 20  # statements run between two snapshots
WINDOW = timedelta(hours=2)
SMALL = 500
MARK = "/* report_cost */ "  # the bench's own statements, left out of the counts

TAGGED_CALLS_SQL = MARK + """
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) AND query LIKE '%%/* hotdata */%%'
"""
ALL_CALLS_SQL = MARK + """
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) AND query NOT LIKE %s
"""


log = logger("report_cost")


def table_sql(name: str, number: int) -> str:
    return f"""
CREATE TABLE {name} (id bigserial PRIMARY KEY, account int NOT NULL, status text NOT NULL,
                     created_at timestamptz NOT NULL, payload text);
INSERT INTO {name} (account, status, created_at, payload)
SELECT 1 + (g * 7 + {number}) % {ACCOUNTS},
       (ARRAY['active', 'pending', 'closed', 'failed'])[1 + (g + {number}) % 4],
       timestamptz '2024-06-01' - g * interval '1 hour', md5(g::text)
FROM generate_series(1, {ROWS_PER_TABLE}) AS g;
"""


def workload(names: list[str]) -> list[tuple[str, Shape]]:
    """Every shape on every table: (statement text, its shape)."""
    return [(shape.sql.format(t=t, u=names[(n + 1) % len(names)]), shape)
            for n, t in enumerate(names) for shape in SHAPES]


def execute(conn: psycopg.Connection[Any], statements: list[tuple[str, Shape]],
            rng: random.Random) -> None:
    for text, shape in statements:
        conn.execute(text, shape.params(rng, ROWS_PER_TABLE)).fetchall()


def count(conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...]) -> int:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return int(row[0])


def scenario(cluster: pgcluster.Cluster, statements: int, snapshot_count: int,
             seed: int, spacing: timedelta) -> dict[str, Any]:
    tables = statements // SHAPES_PER_TABLE
    target, state = f"report_{statements}", f"report_{statements}_state"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for name in (target, state):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    rng = random.Random(seed)
    names = table_names(tables)
    work = workload(names)
    started = time.perf_counter()
    with psycopg.connect(cluster.dsn(target), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        for first in range(0, tables, 25):
            conn.execute("".join(table_sql(names[n], n)
                                 for n in range(first, min(first + 25, tables))).encode())
        conn.execute("ANALYZE")
        conn.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                     "WHERE datname = current_database()), 0)")
        execute(conn, work, rng)
        found = count(conn, MARK + "SELECT count(*) FROM pg_stat_statements WHERE dbid = "
                      "(SELECT oid FROM pg_database WHERE datname = current_database())", ())
    log(f"{statements:,} statements: {tables} tables and the workload in "
        f"{time.perf_counter() - started:.1f} s; {found:,} entries in pg_stat_statements")
    if found < statements:
        raise SystemExit(f"expected {statements:,} pg_stat_statements entries, got {found:,}")

    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        database_url=cluster.url(target), state_database_url=cluster.url(state))

    async def run() -> dict[str, Any]:
        async with connect(settings, "state") as conn:
            await migrate.upgrade(conn)
        started = time.perf_counter()
        taken = []
        with psycopg.connect(cluster.dsn(target), autocommit=True) as conn:
            for _ in range(snapshot_count):
                taken.append(await snapshots.take(settings))
                execute(conn, rng.sample(work, BETWEEN_SNAPSHOTS), rng)
        log(f"{snapshot_count} snapshots in {time.perf_counter() - started:.1f} s")
        with psycopg.connect(cluster.dsn(state), autocommit=True) as conn:
            for n, snapshot in enumerate(taken):  # the newest half an hour ago
                conn.execute("UPDATE hotdata.snapshots SET taken_at = now() - %s WHERE id = %s",
                             (spacing * (len(taken) - n), snapshot))
            conn.execute("VACUUM ANALYZE hotdata.snapshots, hotdata.snapshot_statements")
        with psycopg.connect(cluster.dsn(target), autocommit=True) as conn:
            tagged_before = count(conn, TAGGED_CALLS_SQL, (target,))
            state_before = count(conn, ALL_CALLS_SQL, (state, MARK + "%"))
            started = time.perf_counter()
            report = await build(settings, WINDOW)
            seconds = time.perf_counter() - started
            tagged_after = count(conn, TAGGED_CALLS_SQL, (target,))
            state_after = count(conn, ALL_CALLS_SQL, (state, MARK + "%"))
        started = time.perf_counter()
        png = chart(report)
        chart_seconds = time.perf_counter() - started
        log(f"report: {seconds:.3f} s, {len(report.top)} statements, "
            f"{tagged_after - tagged_before} queries to the target "
            f"({report.queries_to_target} by its own count), "
            f"{state_after - state_before} to the state database; chart {chart_seconds:.3f} s "
            f"({len(png or b''):,} bytes)")
        return {"report_seconds": seconds, "queries_to_target": tagged_after - tagged_before,
                "queries_to_target_reported": report.queries_to_target,
                "queries_to_state": state_after - state_before,
                "top_statements": len(report.top), "chart_seconds": chart_seconds,
                "snapshot_rows": statements * (snapshot_count + 1)}

    return asyncio.run(run())




def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--statements", type=positive, default=5000,
                        help=f"distinct statements, a multiple of {SHAPES_PER_TABLE} "
                             "(default 5000)")
    parser.add_argument("--snapshots", type=positive, default=48,
                        help="snapshots before the report (default 48)")
    parser.add_argument("--spacing-minutes", type=positive, default=30,
                        help="minutes between two snapshots (default 30)")
    parser.add_argument("--seed", type=int, default=42, help="workload parameter seed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    forget_configuration()
    log("starting a throwaway PostgreSQL")
    cluster = pgcluster.create(settings={"pg_stat_statements.max": "20000"})
    try:
        spacing = timedelta(minutes=args.spacing_minutes)
        large = scenario(cluster, args.statements, args.snapshots, args.seed, spacing)
        small = scenario(cluster, SMALL, args.snapshots, args.seed, spacing)
        print(json.dumps({
            "statements": args.statements,
            "snapshots": args.snapshots,
            "report_seconds": round(large["report_seconds"], 3),
            "queries_to_target": large["queries_to_target"],
            "queries_to_target_with_500_statements": small["queries_to_target"],
            "queries_to_target_reported": large["queries_to_target_reported"],
            "report_seconds_with_500_statements": round(small["report_seconds"], 3),
            "queries_to_state": large["queries_to_state"],
            "queries_to_state_with_500_statements": small["queries_to_state"],
            "chart_seconds": round(large["chart_seconds"], 3),
            "top_statements": large["top_statements"],
        }))
        return 0
    finally:
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
