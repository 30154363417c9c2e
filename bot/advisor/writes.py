"""What a new index costs the workload's writes, measured in the same window as its reads.

The reads are weighed from pg_stat_statements, so the writes are too: the INSERT, UPDATE,
DELETE, MERGE and COPY statements it holds, per target table, with their calls and rows. The
table counters (pg_stat_user_tables, as the catalog loads them) are used only without
pg_stat_statements: they count since the statistics were reset, bulk loads included.

- A bulk statement (more than BULK_ROWS rows a call) maintains an index in one pass over
  sorted, cached pages: it is charged BULK_ROWS rows a call, not its rows.
- An UPDATE that PostgreSQL could do as a HOT update (no indexed column changed, room on the
  page) writes no index entry. An index on a column the UPDATE sets makes those updates write
  an entry in every index of the table: the HOT loss, weighted by the table's share of HOT
  updates (n_tup_hot_upd / n_tup_upd).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from bot import catalog, extensions, sqltext
from bot.advisor.model import Candidate
from bot.analysis.collect import pgss_schema
from bot.catalog import TAG, Table

WRITE_MS_PER_ROW = 0.005  # one index entry written, in milliseconds
BULK_ROWS = 100  # rows a call beyond which a statement is a bulk one

WRITE_STATEMENTS_SQL = TAG + """
SELECT query, sum(calls)::bigint AS calls, sum(rows)::bigint AS rows
FROM {pgss}(true)
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND calls > 0
  AND query ~* '^\\s*(insert|update|delete|merge|copy|with)\\M'
GROUP BY query
"""


@dataclass(frozen=True)
class Write:
    """One write statement of the window (or a table's counters, `command` COUNTERS)."""

    table: str  # schema.table
    command: str  # INSERT | UPDATE | DELETE | MERGE | COPY | COUNTERS
    calls: int
    rows: float
    sets: frozenset[str] = frozenset()  # the columns an UPDATE sets

    @property
    def charged_rows(self) -> float:
        """Its rows, a bulk statement's capped at BULK_ROWS a call."""
        if self.command == "COUNTERS" or self.calls <= 0:
            return self.rows
        return min(self.rows, self.calls * BULK_ROWS)


@dataclass
class TableWrites:
    """A table's writes in the window, and the share of its updates that were HOT."""

    writes: list[Write]
    hot_share: float = 0.0


def target(text: str) -> tuple[str, sqltext.Relation, frozenset[str]] | None:
    """(command, table as written, columns an UPDATE sets) of a write statement; None for
    anything else (a COPY TO, a SELECT)."""
    try:
        stmt = sqltext.parse_one(text).stmt
    except sqltext.Unparseable:
        return None
    relation = getattr(stmt, "relation", None)
    if not isinstance(relation, ast.RangeVar) or relation.relname is None:
        return None
    key = sqltext.Relation(relation.schemaname, relation.relname, None)
    if isinstance(stmt, ast.InsertStmt):
        return "INSERT", key, frozenset()
    if isinstance(stmt, ast.UpdateStmt):
        return "UPDATE", key, frozenset(t.name for t in stmt.targetList or ()
                                        if isinstance(t, ast.ResTarget) and t.name)
    if isinstance(stmt, ast.DeleteStmt):
        return "DELETE", key, frozenset()
    if isinstance(stmt, ast.MergeStmt):
        return "MERGE", key, frozenset()
    if isinstance(stmt, ast.CopyStmt) and stmt.is_from:
        return "COPY", key, frozenset()
    return None


async def measured(conn: psycopg.AsyncConnection[dict[str, Any]],
                   tables: list[Table]) -> dict[str, TableWrites]:
    """schema.table → its writes in pg_stat_statements' window (without pg_stat_statements,
    its counters since the statistics began), for `tables`."""
    found = {t.qualified: TableWrites([], t.hot_updates / t.updates if t.updates else 0.0)
             for t in tables}
    pgss, _ = await pgss_schema(conn)
    if pgss is None:
        for t in tables:
            found[t.qualified].writes.append(Write(t.qualified, "COUNTERS", 0,
                                                   float(t.index_writes)))
        return found
    cur = await conn.execute(sql.SQL(WRITE_STATEMENTS_SQL).format(
        pgss=extensions.qualified(pgss, "pg_stat_statements")))
    statements = [(parsed, row) for row in await cur.fetchall()
                  if (parsed := target(row["query"])) is not None]
    resolved = await catalog.resolve(conn, [parsed[1] for parsed, _ in statements])
    by_oid = {t.oid: t.qualified for t in tables}
    for (command, relation, sets), row in statements:
        table = by_oid.get(resolved.get(relation.key, (0, ""))[0])
        if table is not None:
            found[table].writes.append(Write(table, command, int(row["calls"]),
                                             float(row["rows"]), sets))
    return found


def indexed_columns(candidate: Candidate) -> set[str]:
    """The columns whose change an index must follow: keys, INCLUDE and predicate ones."""
    found = set(candidate.key_columns) | set(candidate.include)
    if candidate.where:
        try:
            stmt = sqltext.parse_one(f"SELECT 1 WHERE {candidate.where}").stmt
        except sqltext.Unparseable:
            return found
        found |= {names[-1] for node, _ in sqltext.walk(stmt)
                  if isinstance(node, ast.ColumnRef)
                  and (names := sqltext.names(node.fields))}
    return found


@dataclass
class Penalty:
    ms: float
    rows: float  # index entries it adds in the window
    detail: str  # what they come from, for a person


def penalty(candidate: Candidate, table: Table, writes: TableWrites) -> Penalty:
    """Milliseconds the window's writes would spend maintaining `candidate`."""
    watched = indexed_columns(candidate)
    entries = 0.0
    lost_hot = 0.0
    parts: dict[str, float] = {}
    for write in writes.writes:
        rows = write.charged_rows
        if write.command == "UPDATE":
            touches = bool(write.sets & watched)
            entries += rows * (1 - writes.hot_share)
            if touches:  # those HOT updates now write an entry in every index
                lost_hot += rows * writes.hot_share * (len(table.indexes) + 1)
        else:
            entries += rows
        label = {"INSERT": "inserted", "UPDATE": "updated", "DELETE": "deleted",
                 "MERGE": "merged", "COPY": "copied", "COUNTERS": "written"}[write.command]
        parts[label] = parts.get(label, 0.0) + write.rows
    detail = ", ".join(f"{rows:,.0f} rows {label}" for label, rows in parts.items() if rows)
    bulk = [w for w in writes.writes if w.charged_rows < w.rows]
    if bulk:
        detail += (f"; {len(bulk)} bulk statement(s) charged {BULK_ROWS} rows a call")
    if lost_hot:
        detail += (f"; {lost_hot:,.0f} index entries for updates of "
                   f"{', '.join(sorted(watched & set().union(*(w.sets for w in writes.writes))))}"
                   f" that are HOT today ({writes.hot_share:.0%} of the table's updates)")
    total = entries + lost_hot
    return Penalty(total * WRITE_MS_PER_ROW, total, detail or "no writes in the window")
