"""Applying an approved index migration without blocking production, and proving its effect.

On the migrator connection, autocommit: the allow-listed statement with `lock_timeout` and
bounded retries; an invalid leftover of a failed concurrent build is dropped concurrently
before any retry; afterwards the index must be valid and ready, the table is analysed, and
the statements the index serves are measured before and after.

A partitioned table's index cannot be built CONCURRENTLY in one statement, so it is built in
steps that each hold no lock for long: the empty index of the partitioned table alone (`ON
ONLY`), each partition's index built CONCURRENTLY, each attached (`ALTER INDEX … ATTACH
PARTITION`); the partitioned table's index is valid once every partition's is attached. Each
step is allow-listed, retried like a single index, and listed in the result (and so audited).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from pglast import ast
from psycopg import sql

from bot import catalog, units
from bot.advisor.model import Candidate, Recommendation, quote
from bot.analysis.plan import AppIdentity, Planner
from bot.catalog import TAG
from bot.db import connect
from bot.errors import UserError
from bot.proposals import allowlist
from bot.settings import Settings

log = logging.getLogger(__name__)

REPEATS = 3
BACKOFF_SECONDS = 0.5

INDEX_STATE_SQL = TAG + """
SELECT i.indisvalid AS valid, i.indisready AS ready,
       (SELECT relkind = 'I' FROM pg_class WHERE oid = i.indexrelid) AS partitioned
FROM pg_index i WHERE i.indexrelid = to_regclass(%s)
"""
COLUMNS_SQL = TAG + """
SELECT array(SELECT attname::text FROM pg_attribute
             WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped) AS columns,
       to_regclass(%s) IS NOT NULL AS exists
"""
BUILDING_SQL = TAG + """
SELECT count(*) AS n FROM pg_stat_activity
WHERE application_name = 'hotdata-migrator' AND state = 'active' AND pid <> pg_backend_pid()
  AND query ILIKE '%%' || %s || '%%'
"""


# The partitioned table and every partition below it, parents before their partitions.
TREE_SQL = TAG + """
WITH RECURSIVE tree AS (
  SELECT c.oid, 0 AS depth, NULL::oid AS parent FROM pg_class c WHERE c.oid = to_regclass(%s)
  UNION ALL
  SELECT i.inhrelid, t.depth + 1, i.inhparent
  FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
)
SELECT t.depth, n.nspname AS schema, c.relname AS name, c.relkind = 'p' AS partitioned,
       pn.nspname AS parent_schema, p.relname AS parent_name
FROM tree t
JOIN pg_class c ON c.oid = t.oid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class p ON p.oid = t.parent LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
ORDER BY t.depth, n.nspname, c.relname
"""


class ApplyFailed(UserError):
    """The migration could not be applied; the message says why and what was cleaned up."""


def _table_regclass(rec: Recommendation) -> str:
    schema, table = rec["table"].split(".", 1)
    return f"{quote(schema)}.{quote(table)}"


def _index_regclass(rec: Recommendation) -> str:
    schema = rec["table"].split(".", 1)[0]
    return f"{quote(schema)}.{quote(rec['index'])}"


async def index_state(conn: psycopg.AsyncConnection[dict[str, Any]], rec: Recommendation
                      ) -> dict[str, bool] | None:
    cur = await conn.execute(INDEX_STATE_SQL, (_index_regclass(rec),))
    return await cur.fetchone()


async def table_bytes(conn: psycopg.AsyncConnection[dict[str, Any]],
                      rec: Recommendation) -> int | None:
    """The recommendation's table's size now (pg_total_relation_size, as the catalog reads
    it), or None when it does not exist."""
    cur = await conn.execute(TAG + "SELECT pg_total_relation_size(to_regclass(%s)) AS bytes",
                             (_table_regclass(rec),))
    row = await cur.fetchone()
    return int(row["bytes"]) if row and row["bytes"] is not None else None


@dataclass(frozen=True)
class Hold:
    """Why an approved proposal is not built now: `unneeded` (an index that serves it exists:
    nothing to build), `ask_again` (the table is not what the approver saw, or a transaction
    would make the build wait: a manager decides again) or `refused` (it cannot be built)."""

    outcome: Literal["unneeded", "ask_again", "refused"]
    message: str
    table_bytes: int | None = None  # the table's size now


# The oldest transaction of this database (not hotdata's own session) open longer than the
# lock timeout that CREATE INDEX CONCURRENTLY would wait for: one holding a lock on the table
# that its build conflicts with, or one holding a snapshot (it waits for older snapshots).
WAITED_FOR_SQL = TAG + """
SELECT a.pid, a.application_name AS application,
       extract(epoch FROM now() - a.xact_start) AS seconds
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.xact_start < now() - make_interval(secs => %(seconds)s)
  AND (a.backend_xmin IS NOT NULL OR EXISTS (
        SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.granted
          AND l.relation = to_regclass(%(table)s)
          AND l.mode NOT IN ('AccessShareLock', 'RowShareLock', 'ShareLock')))
ORDER BY a.xact_start LIMIT 1
"""


async def preflight(conn: psycopg.AsyncConnection[dict[str, Any]], rec: Recommendation,
                    approved_bytes: int | None, growth_limit: float,
                    lock_timeout_ms: int) -> Hold | None:
    """Just before building: the index, or one that serves it, may exist already; the table
    may be gone, changed, or grown past `growth_limit` times the `approved_bytes` the approver
    saw; a long transaction may hold it. None when the build may go ahead."""
    state = await index_state(conn, rec)
    if state is not None and state["valid"]:
        return Hold("unneeded", f"index {rec['index']} already exists on {rec['table']}: "
                                "nothing built")
    regclass = _table_regclass(rec)
    cur = await conn.execute(COLUMNS_SQL, (regclass,) * 2)
    row = await cur.fetchone()
    if not row or not row["exists"]:
        return Hold("refused", f"table {rec['table']} no longer exists")
    missing = [c.removesuffix(" DESC") for c in rec.get("columns", [])
               if c.removesuffix(" DESC") not in row["columns"]]
    if missing:
        return Hold("refused", f"table {rec['table']} changed: column(s) "
                               f"{', '.join(missing)} no longer exist")
    cur = await conn.execute(TAG + "SELECT to_regclass(%s)::oid AS oid", (regclass,))
    oid = (await cur.fetchone() or {}).get("oid")
    try:  # its size is read under a lock: a session holding the table makes it wait
        table = (await catalog.load(conn, [oid])).get(oid) if oid is not None else None
    except psycopg.errors.LockNotAvailable:
        table = None  # the holder is named below
    if table is not None:
        served = table.served_by(tuple(rec["columns"]), tuple(rec.get("include") or ()),
                                 rec.get("where"), rec.get("size_bytes") or 0)
        if served is not None:
            return Hold("unneeded", f"the existing index {served.name} already serves what "
                                    f"{rec['index']} would: nothing built")
        if approved_bytes and table.size_bytes > approved_bytes * growth_limit:
            return Hold("ask_again", (
                f"{rec['table']} grew from {units.size_text(approved_bytes)} to "
                f"{units.size_text(table.size_bytes)} since it was approved (more than "
                f"{growth_limit:g} times, HOTDATA_APPLY_GROWTH_LIMIT): approve again for the "
                "table as it is"), table.size_bytes)
    cur = await conn.execute(WAITED_FOR_SQL, {"seconds": lock_timeout_ms / 1000,
                                              "table": regclass})
    waited = await cur.fetchone()
    if waited is not None:
        return Hold("ask_again", (
            f"a transaction open for {waited['seconds']:.1f} s (pid {waited['pid']}, "
            f"application '{waited['application'] or 'unnamed'}') would make CREATE INDEX "
            f"CONCURRENTLY wait for it longer than the lock timeout ({lock_timeout_ms} ms): "
            "approve again once it has ended"))
    return None


async def drop_leftover(conn: psycopg.AsyncConnection[dict[str, Any]], rec: Recommendation) -> bool:
    """Drop an invalid index left by a failed concurrent build; True when one was dropped.
    A partitioned table's own index (ON ONLY) stays: it holds no data, is not used while
    invalid, and cannot be dropped CONCURRENTLY; the next attempt builds on it."""
    state = await index_state(conn, rec)
    if state is None or state["valid"] or state["partitioned"]:
        return False
    await conn.execute(sql.SQL(TAG + "DROP INDEX CONCURRENTLY IF EXISTS {}").format(
        sql.SQL(_index_regclass(rec))))
    return True


async def clean_up(conn: psycopg.AsyncConnection[dict[str, Any]], rec: Recommendation
                  ) -> tuple[bool, str]:
    """Drop the invalid leftover of a failed build: (nothing is left behind, what happened)."""
    try:
        dropped = await drop_leftover(conn, rec)
    except psycopg.errors.LockNotAvailable:
        # DROP INDEX CONCURRENTLY waits for the same transactions the build timed out on.
        return False, (f"the invalid index {rec['index']} it left could not be dropped while "
                       f"a transaction holds a lock on {rec['table']}: drop it later with "
                       f"DROP INDEX CONCURRENTLY IF EXISTS {_index_regclass(rec)}")
    return True, ("the invalid index it left was dropped" if dropped
                  else "no invalid index was left behind")


def build_estimate(size: int | None, rates: list[float],
                   scratch_seconds: float | None) -> dict[str, Any] | None:
    """How long the build of an index on a table of `size` bytes should take: at the median
    pace of this server's past builds (`rates`, bytes per second), else as long as on the
    scratch copy (a copy of the same data); None when neither is known."""
    if rates and size:
        return {"seconds": round(size / statistics.median(rates), 1),
                "basis": f"at the pace of the last {len(rates)} build(s) on this server"}
    if scratch_seconds is not None:
        return {"seconds": round(scratch_seconds, 1), "basis": "as long as on the scratch copy"}
    return None


def _check(rec: Recommendation) -> None:
    """The statement must be allow-listed and create exactly the index the proposal names."""
    try:
        stmt = allowlist.check(rec["sql"])
    except allowlist.Refused as refused:
        raise ApplyFailed(str(refused)) from None
    schema, table = rec["table"].split(".", 1)
    if not (isinstance(stmt, ast.IndexStmt) and stmt.idxname == rec["index"]
            and stmt.relation is not None and (stmt.relation.schemaname or schema) == schema
            and stmt.relation.relname == table):
        raise ApplyFailed(f"refused: the statement does not create the proposed index "
                          f"{rec['index']} on {rec['table']}")


async def _measure(settings: Settings, rec: Recommendation) -> float | None:
    """Summed median time of the statements the index serves, as recorded in the proposal."""
    total = 0.0
    async with connect(settings, "analysis") as conn:
        planner = Planner(conn, settings.statement_timeout_ms)
        for statement in rec.get("statements", []):
            role = statement.get("app_role")
            app = AppIdentity(role, settings.app_jwt_claims or "{}") if role else None
            timings = []
            for _ in range(REPEATS):
                run = await planner.run(statement["text"], statement["values"], role="measure",
                                        label="measure", analyze=True, app=app)
                if run.ms is None:
                    return None
                timings.append(run.ms)
            total += statistics.median(timings)
    return round(total, 3) if rec.get("statements") else None


async def apply(settings: Settings, rec: Recommendation) -> dict[str, Any]:
    """Build the index online; returns the figures. Raises ApplyFailed (nothing left behind)."""
    _check(rec)
    before = await _measure(settings, rec)
    async with connect(settings, "migrator") as conn:
        await conn.execute(sql.SQL(
            TAG + "SET lock_timeout = {}; SET statement_timeout = 0; "
            # no parallel build workers: on a small server the build must leave the writers
            # their cores (a slower build, a steady write latency)
            "SET max_parallel_maintenance_workers = 0; "
            "SET client_connection_check_interval = '1s'").format(
                sql.Literal(f"{settings.lock_timeout_ms}ms")))
        started = asyncio.get_running_loop().time()
        tree = await (await conn.execute(TREE_SQL, (_table_regclass(rec),))).fetchall()
        steps: list[tuple[str, Recommendation]] = (
            partition_steps(rec, tree) if tree and tree[0]["partitioned"]
            else [(rec["sql"], rec)])
        attempt = 0
        for step, built in steps:
            try:
                allowlist.check(step, partition_step=len(steps) > 1)
            except allowlist.Refused as refused:
                raise ApplyFailed(str(refused)) from None
            if step.startswith("CREATE"):  # an invalid leftover would be skipped, not rebuilt
                clean, what = await clean_up(conn, built)
                if not clean:
                    raise ApplyFailed(what)
            attempt = max(attempt, await _run(conn, settings, step, built))
        seconds = asyncio.get_running_loop().time() - started
        state = await index_state(conn, rec)
        if state is None or not (state["valid"] and state["ready"]):
            _, what = await clean_up(conn, rec)
            raise ApplyFailed(f"index {rec['index']} was built but is not valid; {what}")
        schema, table = rec["table"].split(".", 1)
        await conn.execute(sql.SQL(TAG + "ANALYZE {}.{}").format(sql.Identifier(schema),
                                                                 sql.Identifier(table)))
        cur = await conn.execute(TAG + "SELECT pg_relation_size(to_regclass(%s)) AS size",
                                 (_index_regclass(rec),))
        size = await cur.fetchone()
    after = await _measure(settings, rec)
    figures: dict[str, Any] = {
        "build_seconds": round(seconds, 3), "size_bytes": size["size"] if size else None,
        "before_ms": before, "after_ms": after, "attempts": attempt}
    if len(steps) > 1:
        figures["steps"] = [step for step, _ in steps]
    return figures


def drop_sql(rec: Recommendation) -> str:
    """The statement that rolls back the index `rec` created."""
    return f"DROP INDEX CONCURRENTLY IF EXISTS {_index_regclass(rec)};"


async def drop(settings: Settings, rec: Recommendation) -> dict[str, Any]:
    """Roll an index back online (`DROP INDEX CONCURRENTLY IF EXISTS`, the lock timeout, the
    same retries as a build); returns the figures, the statements it served measured before
    and after. Raises ApplyFailed."""
    try:
        allowlist.check(rec["sql"])
    except allowlist.Refused as refused:
        raise ApplyFailed(str(refused)) from None
    if rec["sql"] != drop_sql(rec):
        raise ApplyFailed(f"refused: the statement does not drop the index {rec['index']} "
                          f"on {rec['table']}")
    before = await _measure(settings, rec)
    async with connect(settings, "migrator") as conn:
        await conn.execute(sql.SQL(TAG + "SET lock_timeout = {}; SET statement_timeout = 0"
                                   ).format(sql.Literal(f"{settings.lock_timeout_ms}ms")))
        started = asyncio.get_running_loop().time()
        attempt = await _run(conn, settings, rec["sql"], rec)
        seconds = asyncio.get_running_loop().time() - started
        if await index_state(conn, rec) is not None:
            raise ApplyFailed(f"index {rec['index']} is still there after the drop")
    return {"drop_seconds": round(seconds, 3), "before_ms": before,
            "after_ms": await _measure(settings, rec), "attempts": attempt}


async def _run(conn: psycopg.AsyncConnection[dict[str, Any]], settings: Settings, statement: str,
               built: Recommendation) -> int:
    """One statement with bounded retries on lock timeouts; the attempts it took. Raises
    ApplyFailed after cleaning up the index `built` would have made."""
    attempts = settings.apply_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            await conn.execute(statement)
            return attempt
        except psycopg.errors.LockNotAvailable:
            clean, what = await clean_up(conn, built)
            log.info("lock timeout building %s (attempt %d/%d): %s", built["index"], attempt,
                     attempts, what)
            if attempt == attempts or not clean:  # a kept leftover would make a retry a no-op
                raise ApplyFailed(
                    f"could not take the lock on {built['table']} within "
                    f"{settings.lock_timeout_ms} ms in {attempt} attempt(s); {what}") from None
            await asyncio.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
        except psycopg.Error as error:
            _, what = await clean_up(conn, built)
            raise ApplyFailed(" ".join(str(error).split()) + f"; {what}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def partition_steps(rec: Recommendation, tree: list[dict[str, Any]]
                    ) -> list[tuple[str, Recommendation]]:
    """The online build of `rec`'s index on a partitioned table (`tree`: the table, then its
    partitions, parents first): each step's SQL and the index it makes. Each partition's
    index has the name the advisor gives that index on that partition."""
    def index_on(row: dict[str, Any]) -> Candidate:
        return Candidate(row["schema"], row["name"], tuple(rec["columns"]), rec["where"],
                         tuple(rec["include"]))

    steps: list[tuple[str, Recommendation]] = []
    names: dict[tuple[str, str], Candidate] = {}
    for row in tree:
        index = index_on(row)
        names[(row["schema"], row["name"])] = index
        made: Recommendation = {**rec, "table": f"{row['schema']}.{row['name']}",
                                "index": index.name}
        if row["depth"] == 0 and index.name != rec["index"]:
            raise ApplyFailed(f"refused: the proposal's index {rec['index']} is not the one "
                              f"its columns name on {rec['table']}")
        ddl = (index.create_sql(only=True) if row["partitioned"]
               else index.create_sql(concurrently=True))
        steps.append((ddl, made))
        if row["depth"] > 0:
            parent = names[(row["parent_schema"], row["parent_name"])]
            steps.append((sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                sql.Identifier(parent.schema, parent.name),
                sql.Identifier(index.schema, index.name)).as_string(None), made))
    return steps
