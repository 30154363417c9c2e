"""What-if costs of one statement as the application runs it: each parameter value under its own
(custom) plan, and each value under the generic plan a prepared statement switches to.

Drivers that prepare statements (psycopg after five executions, asyncpg, JDBC) make PostgreSQL
choose, after five custom plans, one generic plan planned for an average value, and run it for
every value. The generic plan's own cost is for that average value: a plan that is cheap for
six rows (a bitmap scan, then a sort) can be slow for a value that matches thousands, where
the custom plan would read twenty rows in index order. So the generic plan is costed at each
value: the statement is planned for the value with the planner allowed only the node kinds the
generic plan uses (`enable_* = off` for the others), which is PostgreSQL's own cost of that
plan's kind at that value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

from bot.analysis.plan import (
    AppIdentity,
    Planner,
    generic_chosen,
    plan_document,
    total_cost,
    walk,
)
from bot.catalog import TAG

# planner switch → the node kinds it disables (enable_indexscan disables index-only scans too)
SWITCHES: dict[str, frozenset[str]] = {
    "enable_seqscan": frozenset({"Seq Scan"}),
    "enable_indexscan": frozenset({"Index Scan", "Index Only Scan"}),
    "enable_indexonlyscan": frozenset({"Index Only Scan"}),
    "enable_bitmapscan": frozenset({"Bitmap Heap Scan", "Bitmap Index Scan"}),
    "enable_tidscan": frozenset({"Tid Scan"}),
    "enable_sort": frozenset({"Sort"}),
    "enable_incremental_sort": frozenset({"Incremental Sort"}),
    "enable_hashagg": frozenset({"HashAggregate"}),
    "enable_nestloop": frozenset({"Nested Loop"}),
    "enable_hashjoin": frozenset({"Hash Join"}),
    "enable_mergejoin": frozenset({"Merge Join"}),
    "enable_material": frozenset({"Material"}),
    "enable_memoize": frozenset({"Memoize"}),
    "enable_gathermerge": frozenset({"Gather Merge"}),
}
# the switches younger than PostgreSQL 13, the oldest hotdata supports: setting one the server
# does not have would fail the transaction
SINCE = {"enable_memoize": 140000}
PARALLEL = frozenset({"Gather", "Gather Merge"})
GOVERNED = frozenset().union(*SWITCHES.values(), PARALLEL)
DISABLED_COST = 1e9  # PostgreSQL up to 17 adds 1e10 to a disabled node's cost


def kinds(plan: dict[str, Any]) -> frozenset[str]:
    """The node kinds of a plan (`EXPLAIN (FORMAT JSON)`'s first element); a hashed aggregate
    is `HashAggregate`, the kind `enable_hashagg` disables."""
    found = set()
    for node in walk(plan["Plan"]):
        kind = node.get("Node Type", "")
        if kind == "Aggregate" and node.get("Strategy") in ("Hashed", "Mixed"):
            kind = "HashAggregate"
        found.add(kind)
    return frozenset(found)


def switches_off(generic: frozenset[str]) -> list[str]:
    """The settings that keep the planner to the generic plan's node kinds."""
    off = [f"{name} = off" for name, disables in SWITCHES.items() if not disables & generic]
    if not PARALLEL & generic:
        off.append("max_parallel_workers_per_gather = 0")
    return off


def usable(plan: dict[str, Any], generic: frozenset[str]) -> bool:
    """A plan the switches kept to the generic plan's kinds, with nothing disabled in it."""
    if total_cost(plan) >= DISABLED_COST or any(n.get("Disabled") for n in walk(plan["Plan"])):
        return False
    return kinds(plan) & GOVERNED <= generic


async def estimate(planner: Planner, text: str, value_sets: list[list[str | None]], *,
                   app: AppIdentity | None, hypothetical: list[str],
                   mode: str = "auto",
                   credit: Callable[[dict[str, Any]], float] | None = None) -> list[float]:
    """Planner costs with HypoPG's hypothetical indexes (CREATE INDEX texts): one per value set
    under its custom plan, then one per value set as a prepared statement runs it (the generic
    plan's kind at that value, when PostgreSQL would choose the generic plan under the
    application's plan_cache_mode `mode`); each less what `credit` takes off its plan
    (`pages.credit`). Raises psycopg.Error when the statement cannot be planned; the
    hypothetical indexes are reset afterwards."""
    conn = planner.conn
    name = planner._name()

    def cost(plan: dict[str, Any]) -> float:
        return total_cost(plan) - (credit(plan) if credit is not None else 0.0)

    async with planner._prepared(name, text, app, hypothetical):
        custom = [await _plan(planner, name, values) for values in value_sets]
        if mode == "force_custom_plan":
            return [cost(p) for p in custom] * 2
        await conn.execute(TAG + "SET LOCAL plan_cache_mode = force_generic_plan")
        generic = await _plan(planner, name, value_sets[0])
        await conn.execute(TAG + "SET LOCAL plan_cache_mode = force_custom_plan")
        prepared = [cost(p) for p in custom]
        if generic_chosen(generic, custom, mode):
            wanted = kinds(generic)
            for n, plan in enumerate(custom):
                if kinds(plan) & GOVERNED <= wanted:
                    continue  # the custom plan is of the generic plan's kind already
                prepared[n] = max(prepared[n], cost(generic))
                # a savepoint: the switches end with it
                async with conn.transaction(force_rollback=True):
                    for setting in _known(planner, switches_off(wanted)):
                        await conn.execute(sql.SQL(TAG + "SET LOCAL " + setting))
                    kept = await _plan(planner, name, value_sets[n])
                    if usable(kept, wanted):
                        prepared[n] = cost(kept)
    return [cost(p) for p in custom] + prepared


def _known(planner: Planner, settings: list[str]) -> list[str]:
    """The settings this server has (enable_memoize is PostgreSQL 14's, for one)."""
    version = planner.conn.info.server_version
    return [s for s in settings if version >= SINCE.get(s.split(" = ")[0], 0)]


async def _plan(planner: Planner, name: str, values: list[str | None]) -> dict[str, Any]:
    return plan_document(await planner._explain(name, values, "FORMAT JSON"))
