"""Step 5 of `analyze`: index recommendations for the analysed workload, costed with HypoPG
as the application runs the statements, chosen under a storage budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bot import extensions, sqltext
from bot.advisor import candidates as cands
from bot.advisor import whatif
from bot.advisor.model import Candidate, Recommendation
from bot.advisor.select import Selection, Workload, select
from bot.advisor.verify import ScratchIsTarget, verify
from bot.analysis.collect import pgss_schema
from bot.analysis.findings import Thresholds
from bot.analysis.model import QueryResult
from bot.analysis.params import column_stats
from bot.analysis.plan import AppIdentity, Planner
from bot.catalog import TAG, Table
from bot.db import DatabaseUnavailable
from bot.settings import Settings

log = logging.getLogger(__name__)

# What one more index costs each written row: a B-tree insertion, a few microseconds.
WRITE_MS_PER_ROW = 0.005

# Rows written per table since the database's statistics were last reset.
WRITES_SQL = TAG + """
SELECT t.schemaname || '.' || t.relname AS table,
       t.n_tup_ins + t.n_tup_upd - t.n_tup_hot_upd + t.n_tup_del AS writes,
       extract(epoch FROM now() - coalesce(d.stats_reset, pg_postmaster_start_time()))
         AS window_s
FROM pg_stat_user_tables t JOIN pg_stat_database d ON d.datname = current_database()
WHERE t.schemaname || '.' || t.relname = ANY(%s::text[])
"""
STATEMENTS_WINDOW_SQL = TAG + """
SELECT extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time())) AS window_s
FROM {info}
"""
# The most bytes a value of each column can take: fixed-width types, and varchar(n)/char(n) at
# 4 bytes a character. text, jsonb, bytea… have no bound and are left out.
WIDTHS_SQL = TAG + """
SELECT w.sch || '.' || w.tbl AS table, a.attname AS column,
       CASE WHEN t.typlen > 0 THEN t.typlen
            WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4
                THEN (a.atttypmod - 4) * 4 + 4 END AS width
FROM unnest(%s::text[], %s::text[]) AS w(sch, tbl)
JOIN pg_namespace n ON n.nspname = w.sch
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.tbl
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
"""
HYPOPG_HINT = ("HypoPG is not installed in this database, so there are no index "
               "recommendations: run `CREATE EXTENSION hypopg;` (Debian: "
               "postgresql-<major>-hypopg; Supabase: Database → Extensions → hypopg)")


@dataclass
class Statement:
    """A statement of the workload as the advisor costs it."""

    workload: Workload
    label: str
    text: str
    value_sets: list[list[str | None]]
    value_labels: list[str]  # "common", "median", "rare" or "given", as the value sets
    app: AppIdentity | None
    tables: dict[str, Table]  # key as written → Table


def _label(result: QueryResult) -> str:
    s = result.statement
    return s.name or (f"queryid {s.queryid}" if s.queryid else s.query[:60])


def _weight(result: QueryResult) -> float:
    s = result.statement
    if s.total_ms > 0:
        return s.total_ms
    measured = [r.ms for r in result.runs if r.ms is not None]
    return max(s.calls, 1) * (max(measured) if measured else 1.0)


def workload(results: list[QueryResult], tables: dict[str, Table],
             app: AppIdentity | None) -> list[Statement]:
    statements = []
    for n, result in enumerate(results):
        owner = [r for r in result.runs if r.role == "owner" and r.plan is not None]
        if result.error or not owner:
            continue
        text = sqltext.repair(result.statement.query)
        used = {r.key: tables[r.key] for r in sqltext.relations(sqltext.parse_one(text).stmt)
                if r.key in tables}
        # Cost it as the role that actually runs it: RLS adds its policies only for the app.
        with_rls = (app is not None and result.statement.runs_as_app
                    and any(t.rls for t in used.values()))
        statements.append(Statement(
            Workload(f"s{n}", _weight(result), frozenset(t.qualified for t in used.values())),
            _label(result), text, [r.values for r in owner], [r.label for r in owner],
            app if with_rls else None, used))
    return statements


def _policy_quals(statement: Statement) -> dict[str, list[str]]:
    """The policy expressions PostgreSQL adds for the application role, per table key."""
    if statement.app is None:
        return {}
    command = sqltext.command(statement.text)
    quals: dict[str, list[str]] = {}
    for key, table in statement.tables.items():
        for policy in table.policies:
            applies = "public" in policy.roles or statement.app.role in policy.roles
            if applies and policy.command in ("ALL", command) and policy.qual:
                quals.setdefault(key, []).append(policy.qual)
    return quals


async def recommend(settings: Settings, conn: psycopg.AsyncConnection[dict[str, Any]],
                    planner: Planner, results: list[QueryResult], tables: dict[str, Table],
                    app: AppIdentity | None, notes: list[str],
                    plan_cache_mode: str = "auto") -> list[Recommendation]:
    """The recommended indexes; `plan_cache_mode` is how the application's prepared
    statements are planned (`session.plan_cache_mode`)."""
    hypopg = await extensions.schema(conn, "hypopg")
    if hypopg is None:
        notes.append(HYPOPG_HINT)
        return []
    planner.hypopg = hypopg
    statements = workload(results, tables, app)
    found = {s.workload.key: cands.predicates(s.text, s.tables, _policy_quals(s))
             for s in statements}
    by_qualified = {t.qualified: t for t in tables.values()}
    key_table = {k: t for s in statements for k, t in s.tables.items()}
    wanted = {(key_table[k].schema, key_table[k].name, c)
              for preds in found.values() for k, p in preds.items() if k in key_table
              for c in [*p.equal, *p.booleans, *p.constants]}
    stats = await column_stats(conn, wanted)
    widths = await column_widths(conn, list(key_table.values()))
    pool: list[Candidate] = []
    for preds in found.values():
        for key, p in preds.items():
            if key in key_table:
                table = key_table[key]
                pool += cands.for_table(p, table, stats, widths.get(table.qualified, {}))
    pool = list(dict.fromkeys(pool))
    fresh = []
    for candidate in pool:
        table = by_qualified[candidate.qualified]
        if table.served_by(candidate.columns, candidate.include, candidate.where) is None:
            fresh.append(candidate)
    skipped = len(pool) - len(fresh)
    if skipped:
        notes.append(f"{skipped} candidate index(es) skipped: already served by an existing "
                     "index")
    if not fresh:
        return []
    sizes = await _sizes(conn, planner, fresh, notes)
    fresh = [c for c in fresh if c in sizes]
    penalty = await _penalties(conn, fresh)
    costs = WhatIfCosts(planner, statements, plan_cache_mode)
    await costs.baselines(notes)
    budget = int(settings.index_budget_mb * 1024 * 1024)
    selection = await select([s.workload for s in costs.statements], fresh, sizes, penalty,
                             budget, costs.relative,
                             {q: t.size_bytes for q, t in by_qualified.items()})
    recommendations = await _recommendations(selection, sizes, costs)
    if not recommendations:
        return []
    notes += await _still_slow_when_prepared(selection, costs)
    if settings.scratch_database_url is None:
        notes.append("index costs are HypoPG estimates and times are predictions: set "
                     "HOTDATA_SCRATCH_DATABASE_URL to a copy of this database to measure them")
        return recommendations
    by_name = {c.name: c for c in selection.chosen}
    chosen = [(r, by_name[r["index"]], [costs.by_key[k] for k in selection.served[by_name[
        r["index"]]]]) for r in recommendations]
    try:
        notes.append(await verify(settings, conn, chosen))
    except (ScratchIsTarget, DatabaseUnavailable, psycopg.Error) as error:
        notes.append(f"could not verify on the scratch database: {error}")
    return recommendations


async def column_widths(conn: psycopg.AsyncConnection[dict[str, Any]],
                        tables: list[Table]) -> dict[str, dict[str, int]]:
    """schema.table → column → the most bytes it can hold, for covering (INCLUDE) variants;
    columns without a bound are absent."""
    unique = {t.qualified: t for t in tables}
    cur = await conn.execute(WIDTHS_SQL, ([t.schema for t in unique.values()],
                                          [t.name for t in unique.values()]))
    widths: dict[str, dict[str, int]] = {}
    for row in await cur.fetchall():
        if row["width"] is not None:
            widths.setdefault(row["table"], {})[row["column"]] = int(row["width"])
    return widths


async def _sizes(conn: psycopg.AsyncConnection[dict[str, Any]], planner: Planner,
                 candidates: list[Candidate], notes: list[str]) -> dict[Candidate, int]:
    """HypoPG's size of each candidate; one HypoPG cannot build (a type without a B-tree
    operator class, say) is left out, and the notes say why."""
    sizes = {}
    try:
        for candidate in candidates:
            try:
                cur = await conn.execute(sql.SQL(
                    TAG + "SELECT {}(indexrelid) AS size FROM {}(%s)").format(
                    planner.hypopg_call("hypopg_relation_size"),
                    planner.hypopg_call("hypopg_create_index")), (candidate.create_sql(),))
            except psycopg.Error as error:
                notes.append(f"candidate {candidate.name} cannot be costed: "
                             f"{error.diag.message_primary or error}")
                continue
            row = await cur.fetchone()
            sizes[candidate] = int(row["size"]) if row else 0
    finally:
        await conn.execute(sql.SQL(TAG + "SELECT {}()").format(
            planner.hypopg_call("hypopg_reset")))
    return sizes


async def _penalties(conn: psycopg.AsyncConnection[dict[str, Any]],
                     candidates: list[Candidate]) -> dict[Candidate, float]:
    """Milliseconds the workload's writes would spend maintaining each index.

    The reads' weights cover pg_stat_statements' window, the table counters their own, often
    longer one: the writes are scaled to the statements' window.
    """
    cur = await conn.execute(WRITES_SQL, (sorted({c.qualified for c in candidates}),))
    rows = await cur.fetchall()
    statements_s = None
    pgss, _ = await pgss_schema(conn)
    if pgss is not None:
        cur = await conn.execute(sql.SQL(STATEMENTS_WINDOW_SQL).format(
            info=extensions.qualified(pgss, "pg_stat_statements_info")))
        row = await cur.fetchone()
        statements_s = float(row["window_s"]) if row else None
    writes = {}
    for row in rows:
        share = 1.0
        if statements_s is not None:
            share = min(1.0, statements_s / max(float(row["window_s"]), 1.0))
        writes[row["table"]] = float(row["writes"] or 0) * share
    return {c: writes.get(c.qualified, 0) * WRITE_MS_PER_ROW for c in candidates}


class WhatIfCosts:
    """Planner costs of each statement under hypothetical index sets, cached per set."""

    def __init__(self, planner: Planner, statements: list[Statement],
                 mode: str = "auto") -> None:
        self.planner = planner
        self.statements = statements
        self.mode = mode
        self.by_key = {s.workload.key: s for s in statements}
        self.base: dict[str, list[float]] = {}
        self._cache: dict[tuple[str, tuple[Candidate, ...]], list[float]] = {}

    async def baselines(self, notes: list[str]) -> None:
        """Cost every statement without new indexes; one that cannot be costed is skipped
        (the notes say why), and the others go on without it."""
        kept = []
        for statement in self.statements:
            try:
                self.base[statement.workload.key] = await self._costs(statement, ())
            except psycopg.Error as error:
                notes.append(f"{statement.label} skipped by the advisor: it cannot be costed "
                             f"({error.diag.message_primary or error})")
                continue
            kept.append(statement)
        self.statements = kept

    async def _costs(self, statement: Statement, config: tuple[Candidate, ...]) -> list[float]:
        key = (statement.workload.key, tuple(sorted(config, key=repr)))
        if key not in self._cache:
            self._cache[key] = await whatif.estimate(
                self.planner, statement.text, statement.value_sets, app=statement.app,
                hypothetical=[c.create_sql() for c in config], mode=self.mode)
        return self._cache[key]

    async def relative(self, work: Workload, config: tuple[Candidate, ...]) -> float:
        statement = self.by_key[work.key]
        costs = await self._costs(statement, config)
        base = self.base[work.key]
        return sum(c / b if b > 0 else 1.0 for c, b in zip(costs, base, strict=True)) / len(base)

    async def cost_pair(self, key: str, config: tuple[Candidate, ...]) -> tuple[float, float]:
        """(cost without, cost with `config`) for the first value set."""
        statement = self.by_key[key]
        return self.base[key][0], (await self._costs(statement, config))[0]

    async def prepared_pair(self, key: str, config: tuple[Candidate, ...]) -> tuple[float, float]:
        """(custom plan cost, cost as a prepared statement runs it) with `config`, for the first
        value set."""
        statement = self.by_key[key]
        found = await self._costs(statement, config)
        return found[0], found[len(statement.value_sets)]

    def config_for(self, key: str, chosen: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        """The chosen indexes on the statement's tables."""
        tables = self.by_key[key].workload.tables
        return tuple(c for c in chosen if c.qualified in tables)


async def _still_slow_when_prepared(selection: Selection, costs: WhatIfCosts) -> list[str]:
    """The statements the chosen indexes serve whose common value, once a driver prepares the
    statement, PostgreSQL would still run under a generic plan far dearer than the plan made
    for that value: no index here fixes that, the way the statement is planned does."""
    chosen = tuple(selection.chosen)
    notes = []
    for key in dict.fromkeys(k for c in chosen for k in selection.served[c]):
        custom, prepared = await costs.prepared_pair(key, costs.config_for(key, chosen))
        if prepared >= Thresholds.generic_ratio * max(custom, 1.0):
            statement = costs.by_key[key]
            notes.append(
                f"{statement.label}: with these indexes its plan for the "
                f"{statement.value_labels[0]} value costs {custom:,.0f}, but once a driver "
                f"prepares it PostgreSQL can run it under a generic plan costing "
                f"{prepared:,.0f} for that value; to keep it planned per value, SET "
                "plan_cache_mode = "
                "force_custom_plan in the sessions that run it, or have the driver not "
                "prepare it")
    return notes


async def _recommendations(selection: Selection, sizes: dict[Candidate, int],
                           costs: WhatIfCosts) -> list[Recommendation]:
    chosen = tuple(selection.chosen)
    out: list[Recommendation] = []
    for candidate in sorted(chosen, key=lambda c: -selection.benefit_ms[c]):
        served = selection.served[candidate]
        before = after = 0.0
        for key in served:
            pair = await costs.cost_pair(key, costs.config_for(key, chosen))
            before, after = before + pair[0], after + pair[1]
        statements = [costs.by_key[k] for k in served]
        out.append({
            "action": "create", "table": candidate.qualified, "index": candidate.name,
            "columns": list(candidate.columns), "where": candidate.where,
            "include": list(candidate.include),
            "sql": candidate.create_sql(concurrently=True) + ";",
            "queries": [costs.by_key[k].label for k in served],
            "cost_before": round(before, 2), "cost_after": round(after, 2),
            "measured_before_ms": None, "measured_after_ms": None,
            "size_bytes": sizes[candidate], "size_estimated": True,
            "benefit_ms": round(selection.benefit_ms[candidate], 2),
            "write_penalty_ms": round(selection.penalty_ms[candidate], 2),
            "costed_as": sorted({s.app.role if s.app else "owner" for s in statements}),
            "statements": [{"label": s.label, "text": s.text, "values": s.value_sets[0],
                            "app_role": s.app.role if s.app else None} for s in statements],
        })
    return out
