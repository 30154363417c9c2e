"""Cleanup: indexes that cost writes and space and serve nothing another index does not.

Built on lint's snapshot and its `redundant` / `unused` checks, so a drop is proposed exactly
when lint reports a duplicate_index or unused_index finding, with the same evidence.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import psycopg

from bot.advisor import lint
from bot.advisor.lint import IndexFacts, Snapshot, TableFacts


def _write_cost(table: TableFacts, snapshot: Snapshot) -> str:
    since = snapshot.stats_since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{table.index_writes:,} writes since {since} each also updated this index "
            f"({table.inserts:,} inserts, {table.updates - table.hot_updates:,} non-HOT updates, "
            f"{table.deletes:,} deletes)")


def _proposal(table: TableFacts, index: IndexFacts, reasons: list[str],
              snapshot: Snapshot) -> dict[str, Any]:
    return {"action": "drop", "table": table.qualified, "index": index.name,
            "sql": lint.drop_sql(table.schema, index.name), "size_bytes": index.size_bytes,
            "reason": "; ".join(reasons), "write_cost": _write_cost(table, snapshot),
            "writes": table.index_writes, "scans": index.scans,
            "columns": index.key_columns, "include": index.include,
            "where": index.predicate}


def proposals(snapshot: Snapshot,
              unused_min_age_days: int = lint.UNUSED_MIN_AGE_DAYS) -> list[dict[str, Any]]:
    """One drop per redundant or unused index, largest first."""
    found = []
    for table in snapshot.tables:
        reasons: dict[int, tuple[IndexFacts, list[str]]] = {}
        for r in lint.redundant(table):
            reasons.setdefault(r.index.oid, (r.index, []))[1].append(r.reason)
        for index in lint.unused(table, snapshot, unused_min_age_days):
            reasons.setdefault(index.oid, (index, []))[1].append(
                f"{index.name} has not been scanned in {snapshot.stats_window}")
        found += [_proposal(table, index, why, snapshot) for index, why in reasons.values()]
    return sorted(found, key=lambda p: (-p["size_bytes"], p["table"], p["index"]))


async def cleanup(conn: psycopg.AsyncConnection[dict],
                  unused_min_age_days: int = lint.UNUSED_MIN_AGE_DAYS,
                  schemas: list[str] | None = None) -> list[dict[str, Any]]:
    """Drop proposals for the connected database: `{"action": "drop", "table", "index", "sql",
    "size_bytes", "reason", "write_cost", …}`, `sql` always DROP INDEX CONCURRENTLY IF EXISTS."""
    return proposals(await lint.facts(conn, schemas), unused_min_age_days)
