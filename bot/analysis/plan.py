"""Step 3: real plans — PREPARE the statement, EXPLAIN EXECUTE it with chosen values, as the
owner and as the application role, inside read-only transactions that are rolled back."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from bot.analysis.model import PlanRun
from bot.catalog import TAG

TYPES_SQL = TAG + """
SELECT array(SELECT format_type(t, NULL) FROM unnest(parameter_types::oid[]) AS t)
       AS types
FROM pg_prepared_statements WHERE name = %s
"""


@dataclass(frozen=True)
class AppIdentity:
    """Who the application runs queries as (Supabase: `authenticated` with JWT claims)."""

    role: str
    claims: str  # JSON object

    @property
    def sub(self) -> str | None:
        try:
            value = json.loads(self.claims).get("sub")
        except (ValueError, AttributeError):
            return None
        return str(value) if value is not None else None


# PostgreSQL charges a custom plan 1000 * cpu_operator_cost (default 0.0025) per relation, plus
# one, for planning it each time (plancache.c) before comparing it with the generic plan.
PLANNING_COST_PER_RELATION = 2.5


def plan_document(row: dict[str, Any] | None) -> dict[str, Any]:
    """The plan of an `EXPLAIN (FORMAT JSON)` row: its document's first element."""
    assert row is not None
    document = row["QUERY PLAN"]
    plan: dict[str, Any] = (json.loads(document) if isinstance(document, str) else document)[0]
    return plan


def walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A plan node and every node under it."""
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


def total_cost(plan: dict[str, Any]) -> float:
    return float(plan["Plan"]["Total Cost"])


def planning_cost(plan: dict[str, Any]) -> float:
    relations = {n["Relation Name"] for n in walk(plan["Plan"]) if "Relation Name" in n}
    return PLANNING_COST_PER_RELATION * (len(relations) + 1)


def average_custom_cost(custom: list[dict[str, Any]]) -> float:
    """What PostgreSQL holds against the generic plan: the custom plans' average cost, each
    with its planning."""
    return sum(total_cost(p) + planning_cost(p) for p in custom) / len(custom)


def generic_chosen(generic: dict[str, Any], custom: list[dict[str, Any]],
                   mode: str = "auto") -> bool:
    """Whether a prepared statement runs under its generic plan: under `plan_cache_mode` auto,
    PostgreSQL's choice after five custom plans, the generic plan when it costs less than the
    average custom plan with its planning (here: over the analysed values)."""
    if mode != "auto":
        return mode == "force_generic_plan"
    return total_cost(generic) < average_custom_cost(custom)


# How what-if indexes are made: HypoPG's hypothetical ones, or real ones built inside the
# planning transaction and rolled back with it (on a scratch copy only, never on the target:
# CREATE INDEX holds a lock that blocks writes while it builds).
WhatIf = Literal["hypopg", "built"]


class Planner:
    """Plans statements on one analysis connection (read-only, statement timeout)."""

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]], timeout_ms: int,
                 whatif: WhatIf = "hypopg") -> None:
        self.conn = conn
        # No automatic prepared statements from psycopg on this connection: once it has some,
        # a new statement that rolls back, drops or alters makes it send DEALLOCATE ALL, which
        # would drop the planner's own while a caller still uses it.
        conn.prepare_threshold = None
        self.timeout_ms = timeout_ms
        self.explain_seconds = 0.0  # time spent waiting for EXPLAIN, for the benchmarks
        self.hypopg = "public"  # the schema HypoPG is installed in (the advisor sets it)
        self.whatif = whatif

    def hypopg_call(self, function: str) -> sql.Identifier:
        """One of HypoPG's functions, qualified: the analysis role's search_path may not hold
        its schema."""
        return sql.Identifier(self.hypopg, function)

    async def parameter_types(self, text: str) -> list[str]:
        """The types PostgreSQL infers for `$1…`; raises psycopg.Error when it cannot prepare."""
        name = self._name()
        async with self._prepared(name, text, None):
            cur = await self.conn.execute(TYPES_SQL, (name,))
            row = await cur.fetchone()
        return list(row["types"]) if row else []

    async def run(self, text: str, values: list[str | None], *, role: str, label: str,
                  analyze: bool, app: AppIdentity | None = None,
                  generic: bool = False) -> PlanRun:
        """One EXPLAIN; with `generic`, of the generic plan PostgreSQL switches a prepared
        statement to (planned once for any value), executed with `values`."""
        result = PlanRun(role=role, label=label, values=values, analyzed=analyze)
        name = self._name()
        options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
        try:
            async with self._prepared(name, text, app, generic=generic):
                row = await self._explain(name, values, options)
        except psycopg.errors.QueryCanceled:
            result.error = f"did not finish in {self.timeout_ms / 1000:g} s"
            return result
        except psycopg.Error as error:
            result.error = " ".join(str(error).split())
            return result
        result.plan = plan_document(row)
        if analyze:
            result.ms = float(result.plan.get("Execution Time", 0.0))
        return result

    async def estimate(self, text: str, value_sets: list[list[str | None]], *,
                       app: AppIdentity | None, hypothetical: list[str]) -> list[float]:
        """Planner costs with HypoPG's hypothetical indexes (CREATE INDEX texts): one per value
        set, then the generic plan's. Raises psycopg.Error when the statement cannot be planned.
        The hypothetical indexes are reset afterwards, so each call starts from the real schema.
        """
        name = self._name()
        costs = []
        async with self._prepared(name, text, app, hypothetical):
            for values in value_sets:
                costs.append(total_cost(plan_document(
                    await self._explain(name, values, "FORMAT JSON"))))
            await self.conn.execute(TAG + "SET LOCAL plan_cache_mode = force_generic_plan")
            costs.append(total_cost(plan_document(
                await self._explain(name, value_sets[0], "FORMAT JSON"))))
        return costs

    @asynccontextmanager
    async def _prepared(self, name: str, text: str, app: AppIdentity | None,
                        hypothetical: list[str] | tuple[str, ...] = (),
                        generic: bool = False) -> AsyncIterator[None]:
        """`text` prepared as `name` in a read-only transaction, then rolled back, deallocated
        and any hypothetical index reset (a built one goes with the rollback): the set-up is
        one round trip, the clean-up another."""
        try:
            await self.conn.execute(sql.SQL("; ").join([
                sql.SQL(TAG + "BEGIN"), *self._settings(app, hypothetical, generic),
                self._prepare(name, text)]))  # last: nothing may follow the statement's text
            yield
        finally:
            if not self.conn.closed:
                # A DEALLOCATE of a statement PREPARE never made fails harmlessly, last.
                with contextlib.suppress(psycopg.errors.InvalidSqlStatementName):
                    await self.conn.execute(sql.SQL("; ").join([
                        sql.SQL(TAG + "ROLLBACK"),
                        *([self._reset_sql()] if hypothetical and self.whatif == "hypopg"
                          else []),
                        self._deallocate_sql(name)]))

    def _reset_sql(self) -> sql.Composed:
        """Hypothetical indexes outlive a rollback: dropped explicitly."""
        return sql.SQL(TAG + "SELECT {}()").format(self.hypopg_call("hypopg_reset"))

    async def _explain(self, name: str, values: list[str | None], options: str
                       ) -> dict[str, Any] | None:
        execute = sql.SQL(TAG + "EXPLAIN ({}) EXECUTE {}").format(sql.SQL(options),
                                                                  sql.Identifier(name))
        if values:
            execute += sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(v) for v in values))
        started = time.perf_counter()
        try:
            cur = await self.conn.execute(execute)
            return await cur.fetchone()
        finally:
            self.explain_seconds += time.perf_counter() - started

    def _settings(self, app: AppIdentity | None, hypothetical: tuple[str, ...] | list[str],
                  generic: bool = False) -> list[sql.Composable]:
        settings: list[sql.Composable] = [
            sql.SQL(TAG + "SET LOCAL statement_timeout = {}").format(sql.Literal(self.timeout_ms))]
        if self.whatif == "built":
            # Built for real, rolled back with the transaction; before it turns read-only,
            # which PostgreSQL allows after writes (only the way back is refused).
            settings += [sql.SQL(TAG + ddl) for ddl in hypothetical]
        settings.append(sql.SQL(TAG + "SET TRANSACTION READ ONLY"))
        # Explicit either way: a plan_cache_mode set for hotdata's role would change the plans.
        settings.append(sql.SQL(TAG + "SET LOCAL plan_cache_mode = {}").format(
            sql.SQL("force_generic_plan" if generic else "force_custom_plan")))
        if self.whatif == "hypopg":
            settings += [sql.SQL(TAG + "SELECT {}({})").format(self.hypopg_call(
                             "hypopg_create_index"), sql.Literal(ddl))
                         for ddl in hypothetical]  # created as hotdata's role, for the session
        if app is not None:
            settings += [
                sql.SQL(TAG + "SET LOCAL ROLE {}").format(sql.Identifier(app.role)),
                sql.SQL(TAG + "SELECT set_config('request.jwt.claims', {}, true), "
                        "set_config('request.jwt.claim.sub', {}, true), "
                        "set_config('request.jwt.claim.role', {}, true)").format(
                    sql.Literal(app.claims), sql.Literal(app.sub or ""), sql.Literal(app.role))]
        return settings

    @staticmethod
    def _prepare(name: str, text: str) -> sql.Composed:
        return sql.SQL(TAG + "PREPARE {} AS {}").format(sql.Identifier(name), sql.SQL(text))

    @staticmethod
    def _deallocate_sql(name: str) -> sql.Composed:
        return sql.SQL(TAG + "DEALLOCATE {}").format(sql.Identifier(name))

    @staticmethod
    def _name() -> str:
        """One name: statements are prepared one at a time and always deallocated."""
        return "hotdata_plan"
