"""Real verification on a scratch copy: build the chosen indexes there for real, ANALYZE, and
EXPLAIN ANALYZE the statements they serve several times before and after. Never on the target.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from bot.advisor.model import Candidate, Recommendation, quote
from bot.analysis.plan import Planner
from bot.catalog import TAG
from bot.db import connect
from bot.errors import UserError
from bot.settings import Settings

REPEATS = 3
IDENTITY_SQL = TAG + ("SELECT current_database() AS db, inet_server_port() AS port, "
                      "pg_postmaster_start_time() AS started")


class ScratchIsTarget(UserError):
    """The scratch database is the target itself: hotdata never builds test indexes there."""


async def _identity(conn: psycopg.AsyncConnection[dict[str, Any]]) -> tuple[Any, ...]:
    cur = await conn.execute(IDENTITY_SQL)
    row = await cur.fetchone()
    assert row is not None
    return row["db"], row["port"], row["started"]


async def _median_ms(planner: Planner, statement: Any) -> float | None:
    """Median execution time of the statement's heaviest value set, as the app runs it."""
    timings = []
    for _ in range(REPEATS):
        run = await planner.run(statement.text, statement.value_sets[0], role="verify",
                                label="verify", analyze=True, app=statement.app)
        if run.ms is None:
            return None
        timings.append(run.ms)
    return statistics.median(timings)


@asynccontextmanager
async def scratch_connection(settings: Settings, target: psycopg.AsyncConnection[dict[str, Any]]
                             ) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    """A connection to HOTDATA_SCRATCH_DATABASE_URL, refused (ScratchIsTarget) when it reaches
    the target itself: the only database hotdata builds test indexes on."""
    assert settings.scratch_database_url is not None
    async with connect(settings, "migrator", dsn=settings.scratch_database_url) as scratch:
        if await _identity(scratch) == await _identity(target):
            raise ScratchIsTarget("HOTDATA_SCRATCH_DATABASE_URL points at the target database; "
                                  "hotdata never builds test indexes there")
        yield scratch


async def verify(settings: Settings, target: psycopg.AsyncConnection[dict[str, Any]],
                 chosen: list[tuple[Recommendation, Candidate, list[Any]]]) -> str:
    """Fill measured_before_ms/measured_after_ms, real size and build time into each
    recommendation; returns a note saying what was done. `chosen` holds (recommendation,
    candidate, statements it serves)."""
    async with scratch_connection(settings, target) as scratch:
        planner = Planner(scratch, settings.statement_timeout_ms * 4)
        statements = {id(s): s for _, _, served in chosen for s in served}
        before = {key: await _median_ms(planner, s) for key, s in statements.items()}
        built = []
        try:
            for recommendation, candidate, _ in chosen:
                started = time.perf_counter()
                await scratch.execute(TAG + candidate.create_sql(named=True))
                recommendation["build_seconds"] = round(time.perf_counter() - started, 3)
                built.append(candidate)
                cur = await scratch.execute(
                    TAG + "SELECT pg_relation_size(%s::regclass) AS size",
                    (f"{quote(candidate.schema)}.{quote(candidate.name)}",))
                row = await cur.fetchone()
                recommendation["size_bytes"] = int(row["size"]) if row else None
                recommendation["size_estimated"] = False
            for table in sorted({(c.schema, c.table) for c in built}):
                await scratch.execute(TAG + f"ANALYZE {quote(table[0])}.{quote(table[1])}")
            after = {key: await _median_ms(planner, s) for key, s in statements.items()}
        finally:
            for candidate in built:
                await scratch.execute(
                    TAG + f"DROP INDEX IF EXISTS {quote(candidate.schema)}.{quote(candidate.name)}")
        for recommendation, _, served in chosen:
            pairs = [(before[id(s)], after[id(s)]) for s in served]
            measured = [(b, a) for b, a in pairs if b is not None and a is not None]
            if pairs and len(measured) == len(pairs):
                recommendation["measured_before_ms"] = round(sum(b for b, _ in measured), 3)
                recommendation["measured_after_ms"] = round(sum(a for _, a in measured), 3)
    return (f"indexes built and measured on the scratch copy (median of {REPEATS} runs each, "
            "then dropped there)")
