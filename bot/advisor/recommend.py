"""Step 5 of `analyze`: index recommendations for the analysed workload, costed with HypoPG
as the application runs the statements, chosen under a storage budget."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bot import extensions, sqltext
from bot.advisor import btree, pages, whatif, writes
from bot.advisor import candidates as cands
from bot.advisor.model import Candidate, Declined, Recommendation
from bot.advisor.select import USED_SHARE, Selection, Workload, select
from bot.advisor.verify import ScratchIsTarget, scratch_connection, verify
from bot.analysis.findings import Thresholds
from bot.analysis.model import PlanRun, QueryResult
from bot.analysis.params import column_stats
from bot.analysis.plan import AppIdentity, Planner, WhatIf
from bot.catalog import TAG, Table
from bot.db import DatabaseUnavailable
from bot.settings import Settings

log = logging.getLogger(__name__)

# Findings whose fix is an index: each ends in a recommendation or a declined entry.
INDEX_FINDINGS = {"seq_scan", "sort_limit", "rows_removed"}

# The most bytes a value of each column can take: fixed-width types, and varchar(n)/char(n) at
# 4 bytes a character. text, jsonb, bytea… have no bound and are left out.
WIDTHS_SQL = TAG + """
SELECT w.sch || '.' || w.tbl AS table, a.attname AS column,
       CASE WHEN t.typlen > 0 THEN t.typlen
            WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4
                THEN (a.atttypmod - 4) * 4 + 4
            -- numeric(p, s): base-10000 digit groups of 2 bytes, one more for the point,
            -- and at most an 8-byte header
            WHEN t.typname = 'numeric' AND a.atttypmod >= 4
                THEN ((((a.atttypmod - 4) >> 16) + 3) / 4 + 1) * 2 + 8 END AS width
FROM unnest(%s::text[], %s::text[]) AS w(sch, tbl)
JOIN pg_namespace n ON n.nspname = w.sch
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.tbl
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
"""
HYPOPG_HINT = ("HypoPG is not installed in this database, so there are no index "
               "recommendations: run `CREATE EXTENSION hypopg;` (Debian: "
               "postgresql-<major>-hypopg; Supabase: Database → Extensions → hypopg), or set "
               "HOTDATA_SCRATCH_DATABASE_URL to a copy of this database, where candidates are "
               "built for real instead")
BUILT_NOTE = ("index costs were measured without HypoPG: each candidate built for real on the "
              "scratch copy, inside a transaction rolled back at once (exact, slower; never on "
              "the target)")


@dataclass
class Statement:
    """A statement of the workload as the advisor costs it."""

    workload: Workload
    label: str
    text: str
    value_sets: list[list[str | None]]
    value_labels: list[str]  # "common", "median", "rare" or "given", as the value sets
    app: AppIdentity | None
    tables: dict[str, Table]  # key as written → Table (behind views: schema.name)
    plan: dict[str, Any] | None  # the owner's plan: the statement as PostgreSQL rewrote it
    wants_index: bool = False  # a finding's fix names an index (seq_scan, sort_limit…)


def _label(result: QueryResult) -> str:
    s = result.statement
    return s.name or (f"queryid {s.queryid}" if s.queryid else s.query[:60])


def _weight(result: QueryResult) -> float:
    s = result.statement
    if s.total_ms > 0:
        return s.total_ms
    measured = [r.ms for r in result.runs if r.ms is not None]
    return max(s.calls, 1) * (max(measured) if measured else 1.0)


def _returned(run: PlanRun) -> float | None:
    """The rows an executed plan returned (None when it was only planned)."""
    root = run.plan["Plan"] if run.analyzed and run.plan else None
    return float(root["Actual Rows"]) if root is not None and "Actual Rows" in root else None


# A value whose plan returns more than this many times the rows a call returns on average can
# be at most this share's inverse of the calls.
HEAVY_VALUES = 10.0


def typical(result: QueryResult, owner: list[PlanRun]) -> list[PlanRun]:
    """The owner runs to cost indexes with: those whose values could be what the calls use.
    A value set returning more than HEAVY_VALUES times the rows a call returns on average
    (pg_stat_statements' rows / calls) is at most a tenth of the calls, and is left out
    (`status IN ($1, $2)` always asked for rare statuses is not costed with the common one);
    lighter ones stay, since an average over heavy and light values says nothing against
    them. All stay when the calls or a run's rows are unknown, or every one is heavy. The
    statement's notes say what was left out."""
    s = result.statement
    if s.calls <= 0:
        return owner
    per_call = s.rows / s.calls
    heavy = [(run, rows) for run in owner if (rows := _returned(run)) is not None
             and rows > HEAVY_VALUES * max(per_call, 1.0)]
    if not heavy or len(heavy) == len(owner):
        return owner
    result.notes.append(
        "indexes costed without the " + ", ".join(
            f"{run.label} values ({rows:,.0f} rows)" for run, rows in heavy)
        + f": more than {HEAVY_VALUES:g} times the {per_call:,.1f} rows a call returns on "
        "average (pg_stat_statements), they are at most a tenth of the calls")
    return [run for run in owner if all(run is not h for h, _ in heavy)]


def workload(results: list[QueryResult], app: AppIdentity | None) -> list[Statement]:
    statements = []
    for n, result in enumerate(results):
        owner = [r for r in result.runs if r.role == "owner" and r.plan is not None]
        if result.error or not owner:
            continue
        owner = typical(result, owner)
        text = sqltext.repair(result.statement.query)
        used = result.tables
        # Cost it as the role that actually runs it: RLS adds its policies only for the app.
        with_rls = (app is not None and result.statement.runs_as_app
                    and any(t.rls for t in used.values()))
        statements.append(Statement(
            Workload(f"s{n}", _weight(result), frozenset(t.qualified for t in used.values())),
            _label(result), text, [r.values for r in owner], [r.label for r in owner],
            app if with_rls else None, used, owner[0].plan,
            any(f.kind in INDEX_FINDINGS for f in result.findings)))
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
                    planner: Planner, results: list[QueryResult], app: AppIdentity | None,
                    notes: list[str], plan_cache_mode: str = "auto"
                    ) -> tuple[list[Recommendation], list[Declined]]:
    """The recommended indexes, and for each statement a finding says needs one that none
    serves, why; `plan_cache_mode` is how the application's prepared statements are planned
    (`session.plan_cache_mode`)."""
    hypopg = await extensions.schema(conn, "hypopg")
    if hypopg is not None:
        planner.hypopg = hypopg
        return await _advise(settings, conn, planner, results, app, notes, plan_cache_mode)
    if settings.scratch_database_url is None:
        notes.append(HYPOPG_HINT)
        return [], []
    try:
        async with scratch_connection(settings, conn) as copy:
            found = await _advise(settings, conn, Planner(copy, planner.timeout_ms * 4, "built"),
                                  results, app, notes, plan_cache_mode)
    except (ScratchIsTarget, DatabaseUnavailable, psycopg.Error) as error:
        notes.append(f"{HYPOPG_HINT}; the scratch copy could not be used: {error}")
        return [], []
    notes.append(BUILT_NOTE)
    return found


async def candidates(conn: psycopg.AsyncConnection[dict[str, Any]], statements: list[Statement]
                     ) -> tuple[dict[str, list[Candidate]], list[Candidate]]:
    """Every index the advisor considers for `statements`: each statement's own candidates
    (by its workload key), and the whole pool, with the unions of candidates on one table."""
    found = {s.workload.key: cands.merged(
        cands.predicates(s.text, s.tables, _policy_quals(s)),
        cands.from_plan(s.plan["Plan"], s.tables, cands.bound_columns(s.text))
        if s.plan else {}, s.tables)
        for s in statements}
    by_qualified = {t.qualified: t for s in statements for t in s.tables.values()}
    wanted = {(s.tables[k].schema, s.tables[k].name, c)
              for s in statements for k, p in found[s.workload.key].items() if k in s.tables
              for c in [*p.equal, *p.booleans, *p.constants]}
    stats = await column_stats(conn, wanted)
    widths = await column_widths(conn, list(by_qualified.values()))
    per_statement: dict[str, list[Candidate]] = {}
    for s in statements:
        for key, p in found[s.workload.key].items():
            if key in s.tables:
                table = s.tables[key]
                per_statement.setdefault(s.workload.key, []).extend(
                    cands.for_table(p, table, stats, widths.get(table.qualified, {})))
    pool = list(dict.fromkeys(c for listed in per_statement.values() for c in listed))
    pool += cands.unions(pool, by_qualified, widths)
    return per_statement, pool


async def _advise(settings: Settings, conn: psycopg.AsyncConnection[dict[str, Any]],
                  planner: Planner, results: list[QueryResult], app: AppIdentity | None,
                  notes: list[str], plan_cache_mode: str
                  ) -> tuple[list[Recommendation], list[Declined]]:
    """recommend() with its what-if method chosen: `planner` makes HypoPG's hypothetical
    indexes on the target (`conn`), or builds them for real on a scratch copy; the catalog
    facts and the write counters always come from the target."""
    statements = workload(results, app)
    per_statement, pool = await candidates(conn, statements)
    by_qualified = {t.qualified: t for s in statements for t in s.tables.values()}
    known = await btree.columns(conn, sorted({(t.schema, t.name) for t in by_qualified.values()}))
    estimated = {c: btree.size(c, by_qualified[c.qualified].rows,
                               known.get(c.qualified, {})) or 0 for c in pool}
    existing = {c: by_qualified[c.qualified].served_by(c.columns, c.include, c.where,
                                                       estimated[c]) for c in pool}
    fresh = [c for c in pool if existing[c] is None]
    skipped = len(pool) - len(fresh)
    if skipped:
        notes.append(f"{skipped} candidate index(es) skipped: already served by an existing "
                     "index")
    sizes, excess = await _sizes(planner, fresh, estimated, notes) if fresh else ({}, {})
    fresh = [c for c in fresh if c in sizes]
    table_writes = await writes.measured(
        conn, [by_qualified[q] for q in sorted({c.qualified for c in fresh})])
    penalties = {c: writes.penalty(c, by_qualified[c.qualified], table_writes[c.qualified])
                 for c in fresh}
    costs = WhatIfCosts(planner, statements, plan_cache_mode, [
        pages.Padding(c, excess[c], by_qualified[c.qualified].rows) for c in excess])
    await costs.baselines(notes)
    budget = int(settings.index_budget_mb * 1024 * 1024)
    selection = await select([s.workload for s in costs.statements], fresh, sizes,
                             {c: p.ms for c, p in penalties.items()}, budget, costs.relative,
                             {q: t.size_bytes for q, t in by_qualified.items()})
    if costs.failed:
        notes.append(f"{costs.failed} what-if costing(s) failed (a timeout, say) and were "
                     "counted as saving nothing; the server log says why")
    recommendations = await _recommendations(selection, sizes, costs, planner.whatif)
    declined = await _declined(statements, per_statement, existing, sizes, penalties, selection,
                               costs, budget, notes)
    if not recommendations:
        return [], declined
    notes += await _still_slow_when_prepared(selection, costs)
    if settings.scratch_database_url is None:
        notes.append("index costs are HypoPG estimates and times are predictions: set "
                     "HOTDATA_SCRATCH_DATABASE_URL to a copy of this database to measure them")
        return recommendations, declined
    by_name = {c.name: c for c in selection.chosen}
    chosen = [(r, by_name[r["index"]], [costs.by_key[k] for k in selection.served[by_name[
        r["index"]]]]) for r in recommendations]
    try:
        notes.append(await verify(settings, conn, chosen))
    except (ScratchIsTarget, DatabaseUnavailable, psycopg.Error) as error:
        notes.append(f"could not verify on the scratch database: {error}")
    return recommendations, declined


def _entry(label: str, reason: str, candidate: Candidate | None = None,
           saving: float | None = None, cost: float | None = None) -> Declined:
    return {"statement": label, "reason": reason,
            "candidate": candidate.create_sql(concurrently=True) + ";" if candidate else None,
            "saving_ms": round(saving, 2) if saving is not None else None,
            "cost_ms": round(cost, 2) if cost is not None else None}


async def _declined(statements: list[Statement], per_statement: dict[str, list[Candidate]],
                    existing: dict[Candidate, Any], sizes: dict[Candidate, int],
                    penalties: dict[Candidate, writes.Penalty], selection: Selection,
                    costs: WhatIfCosts, budget: int, notes: list[str]) -> list[Declined]:
    """Why no recommendation serves a statement a finding says needs an index: with the
    numbers of the candidate that would have served it best on its own."""
    served = {k for c in selection.chosen for k in selection.served[c]}
    used = sum(sizes[c] for c in selection.chosen)
    out: list[Declined] = []
    for s in statements:
        key = s.workload.key
        if not s.wants_index or key in served:
            continue
        mine = per_statement.get(key, [])
        costable = [c for c in mine if c in sizes]
        entry = functools.partial(_entry, s.label)
        if key not in costs.base:
            out.append(entry(next((n for n in notes if n.startswith(f"{s.label} skipped")),
                                  "cannot be costed")))
            continue
        if not costable:
            served_by = next((existing[c] for c in mine if existing.get(c) is not None), None)
            if served_by is not None:
                out.append(entry(f"already served by the existing index {served_by.name}"))
            elif mine:
                out.append(entry(next((n for n in notes if mine[0].name in n),
                                      f"candidate {mine[0].name} cannot be costed"), mine[0]))
            else:
                out.append(entry("no candidate index: nothing in the statement, as planned, "
                                 "filters or sorts a column of its tables"))
            continue
        relative = {c: await costs.relative(s.workload, (c,)) for c in costable}
        best = min(costable, key=lambda c: relative[c])
        saving = s.workload.weight_ms * (1 - relative[best])
        penalty = penalties[best]
        if relative[best] > 1 - USED_SHARE:
            reason = (f"not recommended: no candidate makes it faster (the best, {best.name}, "
                      f"leaves its planner cost at {relative[best]:.0%})")
        elif used + sizes[best] > budget:
            reason = (f"over the budget: {best.name} needs {sizes[best] / 2**20:,.1f} MB and "
                      f"{max(budget - used, 0) / 2**20:,.1f} MB of HOTDATA_INDEX_BUDGET_MB "
                      "are left")
        elif saving <= penalty.ms:
            reason = (f"not recommended: saves {saving:,.0f} ms over the window, costs "
                      f"{penalty.ms:,.0f} ms of writes ({penalty.detail})")
        else:
            reason = (f"not recommended: saves {saving:,.1f} ms over the window against "
                      f"{penalty.ms:,.1f} ms of writes, too little for its "
                      f"{sizes[best] / 2**20:,.1f} MB or beside the indexes chosen")
        out.append(entry(reason, best, saving, penalty.ms))
    return out


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


async def _sizes(planner: Planner, candidates: list[Candidate], estimated: dict[Candidate, int],
                 notes: list[str]) -> tuple[dict[Candidate, int], dict[Candidate, float]]:
    """The size of each candidate: built on a scratch copy, the real size of the index built
    inside a transaction rolled back at once; otherwise made with HypoPG and sized from the
    page layout and the columns' statistics (`btree.size`), or, without statistics, as HypoPG
    estimates it. One that cannot be made (a type without a B-tree operator class, say) is
    left out, and the notes say why. Also, for each one sized from the page layout, the pages
    HypoPG's own estimate has beyond it (`pages.Padding`)."""
    sizes: dict[Candidate, int] = {}
    excess: dict[Candidate, float] = {}
    try:
        for candidate in candidates:
            try:
                if planner.whatif == "built":
                    sizes[candidate] = await _built_size(planner, candidate)
                    continue
                cur = await planner.conn.execute(sql.SQL(
                    TAG + "SELECT {}(indexrelid) AS size FROM {}(%s)").format(
                    planner.hypopg_call("hypopg_relation_size"),
                    planner.hypopg_call("hypopg_create_index")), (candidate.create_sql(),))
            except psycopg.Error as error:
                notes.append(f"candidate {candidate.name} cannot be costed: "
                             f"{error.diag.message_primary or error}")
                continue
            row = await cur.fetchone()
            padded = int(row["size"]) if row else 0
            sizes[candidate] = estimated[candidate] or padded
            if estimated[candidate] and padded:
                excess[candidate] = (padded - estimated[candidate]) / pages.PAGE
    finally:
        if planner.whatif == "hypopg":
            await planner.conn.execute(sql.SQL(TAG + "SELECT {}()").format(
                planner.hypopg_call("hypopg_reset")))
    return sizes, excess


async def _built_size(planner: Planner, candidate: Candidate) -> int:
    """The bytes `candidate` takes once built on the planner's (scratch) database: its table's
    index bytes after the build less those before, inside a transaction that is rolled back."""
    table = (candidate.schema, candidate.table)
    async with planner.conn.transaction(force_rollback=True):
        await planner.conn.execute(sql.SQL(TAG + "SET LOCAL statement_timeout = {}").format(
            sql.Literal(planner.timeout_ms)))
        before = await _index_bytes(planner.conn, table)
        await planner.conn.execute(sql.SQL(TAG + candidate.create_sql()))
        return await _index_bytes(planner.conn, table) - before


INDEX_BYTES_SQL = TAG + """
SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0)::bigint AS bytes
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""


async def _index_bytes(conn: psycopg.AsyncConnection[dict[str, Any]],
                       table: tuple[str, str]) -> int:
    cur = await conn.execute(INDEX_BYTES_SQL, table)
    row = await cur.fetchone()
    return int(row["bytes"]) if row else 0


class WhatIfCosts:
    """Planner costs of each statement under hypothetical index sets, cached per set."""

    def __init__(self, planner: Planner, statements: list[Statement],
                 mode: str = "auto", paddings: list[pages.Padding] | None = None) -> None:
        self.planner = planner
        self.statements = statements
        self.mode = mode
        self.paddings = {p.candidate: p for p in paddings or []}
        self.random_page_cost = 4.0  # the server's, read with the baselines
        self.by_key = {s.workload.key: s for s in statements}
        self.base: dict[str, list[float]] = {}
        self.failed = 0  # what-if costings that failed (counted as saving nothing)
        self._cache: dict[tuple[str, tuple[Candidate, ...]], list[float]] = {}

    async def baselines(self, notes: list[str]) -> None:
        """Cost every statement without new indexes; one that cannot be costed is skipped
        (the notes say why), and the others go on without it."""
        cur = await self.planner.conn.execute(
            TAG + "SELECT current_setting('random_page_cost')::float8 AS cost")
        row = await cur.fetchone()
        self.random_page_cost = float(row["cost"]) if row else self.random_page_cost
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
        """The statement's costs under `config`. One that cannot be costed (a build on the
        scratch copy past the timeout, say) costs what it costs without new indexes: that
        set then saves it nothing, and the analysis goes on."""
        key = (statement.workload.key, tuple(sorted(config, key=repr)))
        if key not in self._cache:
            try:
                paddings = [self.paddings[c] for c in config if c in self.paddings]
                self._cache[key] = await whatif.estimate(
                    self.planner, statement.text, statement.value_sets, app=statement.app,
                    hypothetical=[c.create_sql() for c in config], mode=self.mode,
                    credit=lambda plan: pages.credit(plan, paddings, self.random_page_cost))
            except psycopg.Error as error:
                if not config:
                    raise
                log.warning("%s not costed with %s: %s", statement.label,
                            ", ".join(c.name for c in config),
                            error.diag.message_primary or error)
                self.failed += 1
                self._cache[key] = self.base[statement.workload.key]
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
                           costs: WhatIfCosts, whatif: WhatIf) -> list[Recommendation]:
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
            "size_bytes": sizes[candidate], "size_estimated": whatif == "hypopg",
            "costing": whatif,
            "benefit_ms": round(selection.benefit_ms[candidate], 2),
            "write_penalty_ms": round(selection.penalty_ms[candidate], 2),
            "costed_as": sorted({s.app.role if s.app else "owner" for s in statements}),
            "statements": [{"label": s.label, "text": s.text, "values": s.value_sets[0],
                            "app_role": s.app.role if s.app else None} for s in statements],
        })
    return out
