"""Statistics snapshots: pg_stat_statements and table counters copied into the state schema,
and the deltas between two of them — correct across pg_stat_statements_reset() and restarts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bot import extensions
from bot.catalog import TAG, pgss_reset
from bot.db import connect
from bot.settings import Settings

STATEMENTS_SQL = TAG + """
SELECT queryid::text AS queryid, min(query) AS query, sum(calls)::bigint AS calls,
       sum(total_exec_time) AS total_ms, sum(rows)::bigint AS rows
FROM {pgss}
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%%/* hotdata */%%'
GROUP BY queryid
"""
EPOCHS_SQL = TAG + """
SELECT {reset} AS statements_reset, pg_postmaster_start_time() AS server_started
"""
TABLES_SQL = TAG + """
SELECT schemaname || '.' || relname AS relation, n_tup_ins AS inserts, n_tup_upd AS updates,
       n_tup_del AS deletes, coalesce(seq_scan, 0) AS seq_scans, coalesce(idx_scan, 0) AS idx_scans
FROM pg_stat_user_tables
"""


@dataclass
class Delta:
    queryid: str
    query: str
    calls: int
    total_ms: float

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0


async def take(settings: Settings) -> int | None:
    """Copy the target's statistics into a new snapshot; its id (None without pgss)."""
    async with connect(settings, "analysis") as target:
        schema = await extensions.schema(target, "pg_stat_statements")
        if schema is None:
            return None
        # Probed by reading it (autocommit: a failure leaves nothing behind), not with
        # pgss_problem, whose transaction would put an untagged BEGIN and COMMIT of hotdata's
        # own into every window.
        try:
            epochs = await (await target.execute(sql.SQL(EPOCHS_SQL).format(
                reset=pgss_reset(target.info.server_version, schema)))).fetchone()
            statements = await (await target.execute(sql.SQL(STATEMENTS_SQL).format(
                pgss=extensions.qualified(schema, "pg_stat_statements")))).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.ObjectNotInPrerequisiteState):
            return None
        tables = await (await target.execute(TABLES_SQL)).fetchall()
    assert epochs is not None
    async with connect(settings, "state") as state, state.transaction():
        cur = await state.execute(
            "INSERT INTO hotdata.snapshots (statements_reset, server_started) VALUES (%s, %s) "
            "RETURNING id", (epochs["statements_reset"], epochs["server_started"]))
        row = await cur.fetchone()
        assert row is not None
        snapshot = int(row["id"])
        async with state.cursor() as cur, cur.copy(
                "COPY hotdata.snapshot_statements (snapshot_id, queryid, query, calls, "
                "total_ms, rows) FROM STDIN") as copy:
            for s in statements:
                await copy.write_row((snapshot, s["queryid"], s["query"], s["calls"],
                                      s["total_ms"], s["rows"]))
        async with state.cursor() as cur, cur.copy(
                "COPY hotdata.snapshot_tables (snapshot_id, relation, inserts, updates, "
                "deletes, seq_scans, idx_scans) FROM STDIN") as copy:
            for t in tables:
                await copy.write_row((snapshot, t["relation"], t["inserts"], t["updates"],
                                      t["deletes"], t["seq_scans"], t["idx_scans"]))
        await state.execute(
            "DELETE FROM hotdata.snapshots WHERE taken_at < now() - %s * interval '1 second'",
            (settings.snapshot_retention_hours * 3600,))
    return snapshot


async def _statements(conn: psycopg.AsyncConnection[dict[str, Any]], snapshot: int
                      ) -> dict[str, dict[str, Any]]:
    cur = await conn.execute("SELECT queryid, query, calls, total_ms FROM "
                             "hotdata.snapshot_statements WHERE snapshot_id = %s", (snapshot,))
    return {r["queryid"]: r for r in await cur.fetchall()}


async def deltas(conn: psycopg.AsyncConnection[dict[str, Any]], start: dict[str, Any] | None,
                 end: dict[str, Any]) -> list[Delta]:
    """What ran between two snapshots (rows of hotdata.snapshots), heaviest first.

    After a reset or a restart between them, the counters started again from zero, so the
    end snapshot alone is the window's work; a statement whose calls went down was reset on
    its own (pg_stat_statements evicts entries) and counts from zero too.
    """
    after = await _statements(conn, end["id"])
    restarted = start is None or (start["statements_reset"], start["server_started"]) != (
        end["statements_reset"], end["server_started"])
    before: dict[str, dict[str, Any]] = {}
    if start is not None and not restarted:
        before = await _statements(conn, start["id"])
    found = []
    for queryid, row in after.items():
        old = before.get(queryid)
        if old is None or row["calls"] < old["calls"]:
            calls, total = row["calls"], row["total_ms"]
        else:
            calls, total = row["calls"] - old["calls"], row["total_ms"] - old["total_ms"]
        if calls > 0:
            found.append(Delta(queryid, row["query"], int(calls), float(total)))
    return sorted(found, key=lambda d: d.total_ms, reverse=True)


async def at_or_before(conn: psycopg.AsyncConnection[dict[str, Any]], moment: Any
                       ) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT * FROM hotdata.snapshots WHERE taken_at <= %s "
                             "ORDER BY taken_at DESC LIMIT 1", (moment,))
    return await cur.fetchone()


async def latest(conn: psycopg.AsyncConnection[dict[str, Any]]) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT * FROM hotdata.snapshots ORDER BY taken_at DESC LIMIT 1")
    return await cur.fetchone()
