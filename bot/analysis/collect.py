"""Step 1: the workload — pg_stat_statements' heaviest statements and the watched queries."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bot import extensions, sqltext
from bot.analysis.model import Statement
from bot.catalog import TAG, pgss_io_ms
from bot.errors import UserError

MAX_TOP = 50
OVERFETCH = 10  # rows read per wanted statement, to survive filtering and grouping

# One row per queryid (several roles running a statement give several entries), heaviest first.
PGSS_SQL = TAG + """
SELECT s.queryid::text AS queryid, min(s.query) AS query, sum(s.calls)::bigint AS calls,
       sum(s.total_exec_time) AS total_ms, sum(s.rows)::bigint AS rows,
       sum(s.shared_blks_hit)::bigint AS shared_blks_hit,
       sum(s.shared_blks_read)::bigint AS shared_blks_read,
       sum(s.temp_blks_written)::bigint AS temp_blks_written, {io_ms} AS io_ms,
       coalesce(sum(s.calls) FILTER (WHERE r.rolsuper OR r.rolbypassrls), 0)::bigint
         AS bypass_calls
FROM {pgss} s LEFT JOIN pg_roles r ON r.oid = s.userid
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.query NOT LIKE '%%/* hotdata */%%'
GROUP BY s.queryid
ORDER BY sum(s.total_exec_time) DESC
LIMIT %s
"""

SETUP_HINT = ("add `shared_preload_libraries = 'pg_stat_statements'` to postgresql.conf, "
              "restart PostgreSQL, then run `CREATE EXTENSION pg_stat_statements;` in this "
              "database (on Supabase: Database → Extensions → pg_stat_statements)")


class WatchedQueriesError(UserError):
    """The watched-queries file is missing or malformed; the message names the problem."""


@dataclass(frozen=True)
class Watched:
    name: str
    sql: str
    params: list[str | None] | None
    calls: int


def load_watched(path: Path) -> list[Watched]:
    """Read `[[query]]` tables (name, sql, optional params and calls) from a TOML file."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise WatchedQueriesError(f"watched-queries file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise WatchedQueriesError(f"watched-queries file {path} is not valid TOML: {error}") \
            from None
    entries = data.get("query", [])
    if not isinstance(entries, list):
        raise WatchedQueriesError(f"{path}: expected [[query]] tables")
    watched = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("sql"), str):
            raise WatchedQueriesError(f"{path}: query #{number} needs a `sql` string")
        try:
            sqltext.parse_one(entry["sql"])
        except sqltext.Unparseable as error:
            raise WatchedQueriesError(
                f"{path}: query #{number} ({entry.get('name', 'unnamed')}) does not parse: "
                f"{error}") from None
        params = entry.get("params")
        if params is not None and not isinstance(params, list):
            raise WatchedQueriesError(f"{path}: query #{number}: `params` must be a list")
        calls = entry.get("calls", 0)
        if not isinstance(calls, int) or calls < 0:
            raise WatchedQueriesError(f"{path}: query #{number}: `calls` must be a whole "
                                      "number, at least 0")
        watched.append(Watched(str(entry.get("name") or f"watched #{number}"), entry["sql"],
                               [None if p is None else str(p) for p in params]
                               if params is not None else None,
                               calls))
    return watched


async def pgss_schema(conn: psycopg.AsyncConnection[dict[str, Any]]
                      ) -> tuple[str | None, str | None]:
    """The schema pg_stat_statements can be read from here, or None and what is missing.

    Probing the view's function works for any role, where reading `shared_preload_libraries`
    needs pg_read_all_settings; without the query texts it does not read the texts file.
    """
    schema = await extensions.schema(conn, "pg_stat_statements")
    if schema is None:
        return None, "not created in this database"
    try:
        async with conn.transaction():
            await conn.execute(sql.SQL(TAG + "SELECT 1 FROM {}(false) LIMIT 1").format(
                extensions.qualified(schema, "pg_stat_statements")))
    except psycopg.errors.ObjectNotInPrerequisiteState:
        return None, "not preloaded (shared_preload_libraries)"
    return schema, None


async def pgss_problem(conn: psycopg.AsyncConnection[dict[str, Any]]) -> str | None:
    """None when pg_stat_statements can be read here; otherwise what is missing."""
    return (await pgss_schema(conn))[1]


async def pg_stat_statements(conn: psycopg.AsyncConnection[dict[str, Any]], top: int,
                             notes: list[str]) -> list[Statement]:
    """The `top` heaviest application statements by total time, grouped by identity."""
    schema, problem = await pgss_schema(conn)
    if schema is None:
        notes.append(f"pg_stat_statements is {problem}: {SETUP_HINT}. "
                     "Analysing the watched queries only.")
        return []
    cur = await conn.execute(sql.SQL(PGSS_SQL).format(
        pgss=extensions.qualified(schema, "pg_stat_statements"),
        io_ms=pgss_io_ms(conn.info.server_version)), (top * OVERFETCH,))
    rows = await cur.fetchall()
    visible = [row for row in rows if row["query"] != "<insufficient privilege>"]
    grouped: dict[str, Statement] = {}
    first_seen: dict[str, int] = {}  # ties keep pg_stat_statements' order
    for batch in _fingerprint_batches(visible):
        if len(grouped) >= top and _total(batch) < _nth_total(grouped, top):
            break  # neither these statements nor any lighter ones can reach the top
        for position, row in batch:
            text = row["query"]
            try:
                key = sqltext.identity(text)
            except sqltext.Unparseable:
                key = f"unparsed:{row['queryid']}"  # kept, and reported as skipped with why
            else:
                if not sqltext.is_dml(text) or sqltext.touches_only_catalogs(text):
                    continue
            found = grouped.get(key)
            if found is None:
                first_seen[key] = position
                grouped[key] = Statement(
                    key, text, "pg_stat_statements", queryid=row["queryid"],
                    calls=row["calls"], total_ms=row["total_ms"], rows=row["rows"],
                    shared_blks_hit=row["shared_blks_hit"],
                    shared_blks_read=row["shared_blks_read"],
                    temp_blks_written=row["temp_blks_written"], io_ms=row["io_ms"],
                    bypass_calls=row["bypass_calls"])
                continue
            found.calls += row["calls"]
            found.total_ms += row["total_ms"]
            found.rows += row["rows"]
            found.shared_blks_hit += row["shared_blks_hit"]
            found.shared_blks_read += row["shared_blks_read"]
            found.temp_blks_written += row["temp_blks_written"]
            found.io_ms += row["io_ms"]
            found.bypass_calls += row["bypass_calls"]
    if len(rows) > len(visible):
        notes.append(f"{len(rows) - len(visible)} statement(s) of other roles are hidden from "
                     "this role: GRANT pg_read_all_stats TO it to analyse them")
    ranked = sorted(grouped.values(),
                    key=lambda s: (-s.total_ms, first_seen[s.identity]))[:top]
    for statement in ranked:
        statement.mean_ms = statement.total_ms / statement.calls if statement.calls else 0.0
    return ranked


Batch = list[tuple[int, dict[str, Any]]]  # (position in pg_stat_statements' order, row)


def _fingerprint_batches(rows: list[dict[str, Any]]) -> list[Batch]:
    """The rows grouped by fingerprint, heaviest first.

    Texts of one statement (one identity) always share a fingerprint, so a batch's total time
    bounds that of every statement in it: the batches too light to reach the top need not be
    parsed, and parsing a text costs far more than fingerprinting it.
    """
    batches: dict[str, Batch] = {}
    for position, row in enumerate(rows):
        try:
            key = sqltext.fingerprint(row["query"])
        except sqltext.Unparseable:
            key = f"unparsed:{row['queryid']}"
        batches.setdefault(key, []).append((position, row))
    return sorted(batches.values(), key=_total, reverse=True)


def _total(batch: Batch) -> float:
    total: float = sum(row["total_ms"] for _, row in batch)
    return total


def _nth_total(grouped: dict[str, Statement], n: int) -> float:
    return sorted((s.total_ms for s in grouped.values()), reverse=True)[n - 1]


def merge_watched(statements: list[Statement], watched: list[Watched]) -> list[Statement]:
    """Watched queries are always analysed. One already collected keeps its statistics and
    takes the watched text and values: pg_stat_statements replaced its constants by `$n`."""
    by_key = {s.identity: s for s in statements}
    merged = list(statements)
    for entry in watched:
        key = sqltext.identity(entry.sql)
        if key in by_key:
            found = by_key[key]
            found.name, found.query, found.params = entry.name, entry.sql, entry.params
            continue
        statement = Statement(key, entry.sql, "watched", name=entry.name, calls=entry.calls,
                              params=entry.params)
        by_key[key] = statement
        merged.append(statement)
    return merged
