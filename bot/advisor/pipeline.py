"""`analyze`, the whole pipeline: collect the workload, plan each statement as owner and as the
app, find problems (`bot.analysis`), then propose, cost, select and verify indexes and find
the ones to drop (this package)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg

from bot import catalog, sqltext
from bot.advisor.cleanup import cleanup
from bot.advisor.recommend import recommend
from bot.analysis import collect, findings, params, plan_history, session
from bot.analysis.model import Analysis, PlanRun, QueryResult, Statement, slowest
from bot.analysis.plan import AppIdentity, Planner
from bot.catalog import Table
from bot.db import DatabaseUnavailable, connect
from bot.dsn import redact_dsn
from bot.errors import UserError
from bot.settings import Settings

Progress = Callable[[str], Awaitable[None]]

log = logging.getLogger(__name__)

# Connections planning at once. Each statement's plans are independent, and EXPLAIN ANALYZE
# keeps a server core busy, so a few connections finish the work in a fraction of the time
# while leaving the server's other cores (and connection slots) to the application.
PLANNERS = 3


class BadRequest(UserError):
    """The request itself is wrong (e.g. `top 0`); nothing was run."""


def app_identity(settings: Settings) -> AppIdentity | None:
    if not settings.app_role:
        return None
    return AppIdentity(settings.app_role, settings.app_jwt_claims or "{}")


async def analyze(settings: Settings, *, top: int = 5,
                  progress: Progress | None = None) -> Analysis:
    if not 1 <= top <= collect.MAX_TOP:
        raise BadRequest(f"top must be between 1 and {collect.MAX_TOP}, got {top}")
    watched = collect.load_watched(settings.watched_queries) if settings.watched_queries else []
    target = settings.database_url
    started = time.perf_counter()
    result = Analysis(database=redact_dsn(target),
                      collected_at=datetime.now(UTC).isoformat(timespec="seconds"))
    planners: list[Planner] = []
    snapshot_taken = False
    collected: asyncio.Future[_Workload] = asyncio.get_running_loop().create_future()

    async def plan_each(planner: Planner) -> None:
        planners.append(planner)
        workload = await collected
        for index, statement in workload.queue:
            await _say(progress, f"planning {index + 1}/{len(workload.statements)}…")
            result.results[index] = await workload.plan(planner, statement)

    async with connect(settings, "analysis") as conn:
        planner = Planner(conn, settings.statement_timeout_ms)

        async def collect_then_plan() -> None:
            await _say(progress, "collecting the workload…")
            workload = await _collect(conn, settings, top, watched, result.notes)
            result.results = [QueryResult(s) for s in workload.statements]
            collected.set_result(workload)
            result.owner_rls = await session.owner_rls(conn, workload.tables.values())
            if result.owner_rls is not None:  # first: it qualifies every owner plan
                result.notes.insert(0, result.owner_rls.note)
            await plan_each(planner)

        async def help_on_another_connection(take_snapshot: bool) -> None:
            # Opened while the workload is collected; the first one meanwhile takes the lint
            # snapshot behind the cleanup proposals, which needs no plan.
            nonlocal snapshot_taken
            try:
                async with connect(settings, "analysis") as extra:
                    if take_snapshot:
                        result.cleanup = await cleanup(extra)
                        snapshot_taken = True
                    await plan_each(Planner(extra, settings.statement_timeout_ms))
            except DatabaseUnavailable as error:  # e.g. no connection slot left: plan with fewer
                log.info("planning on fewer connections: %s", error)

        await _together(collect_then_plan(),
                        *(help_on_another_connection(n == 0) for n in range(PLANNERS - 1)))
        if not snapshot_taken:
            result.cleanup = await cleanup(conn)
        await _say(progress, "costing candidate indexes…")
        workload = collected.result()
        result.recommendations, result.declined = await recommend(
            settings, conn, planner, result.results, workload.app, result.notes,
            workload.plan_cache_mode)
        result.planner_settings = await plan_history.planner_settings(conn)
    result.timings = {"total_s": round(time.perf_counter() - started, 3),
                      "explain_s": round(sum(p.explain_seconds for p in planners), 3)}
    return result


@dataclass
class _Workload:
    """The collected statements and what planning them needs."""

    statements: list[Statement]
    texts: dict[str, str | None]  # identity → preparable text (None: unparseable)
    tables: dict[str, Table]  # key as written; the tables behind views under schema.name
    behind: dict[str, list[sqltext.Relation]]  # view key → the tables it reads
    uses: dict[str, dict[int, sqltext.ParamUse]]
    stats: dict[tuple[str, str], params.ColumnStats]
    volatile: set[str]
    app: AppIdentity | None
    plan_cache_mode: str  # how the application's prepared statements are planned
    queue: Iterator[tuple[int, Statement]] = field(init=False)  # shared by the connections

    def __post_init__(self) -> None:
        self.queue = enumerate(self.statements)

    async def plan(self, planner: Planner, statement: Statement) -> QueryResult:
        text = self.texts[statement.identity]
        tables = reads(text, self.tables, self.behind) if text else {}
        return await _statement(planner, statement, text, tables, self.app,
                                self.uses.get(statement.identity, {}), self.stats,
                                self.volatile, self.plan_cache_mode)


async def _collect(conn: psycopg.AsyncConnection[dict[str, Any]], settings: Settings, top: int,
                   watched: list[collect.Watched], notes: list[str]) -> _Workload:
    statements = await collect.pg_stat_statements(conn, top, notes)
    statements = collect.merge_watched(statements, watched)
    if not statements:
        notes.append("no application statements found: run the workload first, or "
                     "list the queries to watch in HOTDATA_WATCHED_QUERIES")
    texts = {s.identity: _preparable(s) for s in statements}
    relations = [r for text in texts.values() if text for r in sqltext.relations_in(text)]
    tables = await catalog.tables(conn, relations)
    behind = await catalog.behind_views(conn, [r for r in relations if r.key not in tables])
    if behind:
        tables.update(await catalog.tables(conn, [b for bases in behind.values() for b in bases]))
    uses = {key: _through_views(sqltext.param_uses(text), tables, behind)
            for key, text in texts.items() if text}
    volatile = await session.volatile_functions(
        conn, {f for text in texts.values() if text for f in sqltext.functions(text)})
    stats = await params.column_stats(conn, params.used_columns(
        [u for per_statement in uses.values() for u in per_statement.values()], tables))
    mode = await session.plan_cache_mode(conn, settings.app_role)
    return _Workload(statements, texts, tables, behind, uses, stats, volatile,
                     app_identity(settings), mode)


def _through_views(uses: dict[int, sqltext.ParamUse], tables: dict[str, Table],
                   behind: dict[str, list[sqltext.Relation]]) -> dict[int, sqltext.ParamUse]:
    """Parameters compared with a view's column, as compared with the column of that name of
    the one table behind the view that has it: its statistics give the values to plan with."""
    found = {}
    for number, use in uses.items():
        bases = [b.key for b in behind.get(use.table or "", ())
                 if b.key in tables and use.column in tables[b.key].columns]
        found[number] = replace(use, table=bases[0]) if len(bases) == 1 else use
    return found


async def _together(*steps: Coroutine[Any, Any, None]) -> None:
    """Run `steps` concurrently; the first failure cancels the others and is raised as itself
    (callers catch connection and database errors by their type)."""
    try:
        async with asyncio.TaskGroup() as group:
            for step in steps:
                group.create_task(step)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        await progress(text)


def reads(text: str, tables: dict[str, Table],
          behind: dict[str, list[sqltext.Relation]]) -> dict[str, Table]:
    """The tables a statement reads: those it names (key as written), and those behind the
    views it names (key schema.name), as PostgreSQL scans them once it rewrites the views."""
    found = {}
    for relation in sqltext.relations_in(text):
        for key in (relation.key, *(b.key for b in behind.get(relation.key, ()))):
            if key in tables:
                found[key] = tables[key]
    return found


def _preparable(statement: Statement) -> str | None:
    try:
        return sqltext.repair(statement.query)
    except sqltext.Unparseable:
        return None


async def _statement(planner: Planner, statement: Statement, text: str | None,
                     tables: dict[str, Table], app: AppIdentity | None,
                     uses: dict[int, sqltext.ParamUse],
                     stats: dict[tuple[str, str], params.ColumnStats],
                     volatile: set[str], mode: str) -> QueryResult:
    result = QueryResult(statement)
    if text is None:
        try:
            sqltext.parse_one(statement.query)
        except sqltext.Unparseable as error:
            result.error = f"skipped: the parser cannot read this statement ({error})"
        return result
    result.tables = tables
    try:
        types = await planner.parameter_types(text)
    except psycopg.Error as error:
        result.error = f"could not be planned: {' '.join(str(error).split())}"
        return result
    if statement.params is not None:
        if len(statement.params) != len(types):
            result.error = (f"the watched query takes {len(types)} parameter(s) but "
                            f"{len(statement.params)} value(s) are given")
            return result
        sets: dict[str, list[str | None]] = {"given": list(statement.params)}
    else:
        limits = [n for n, use in uses.items() if use.role == "limit"]
        observed = params.observed_limit(statement.calls, statement.rows) if limits else None
        sets = params.value_sets(uses, types, tables, stats, observed or params.LIMIT_VALUE)
        if observed is not None:
            result.notes.append(
                f"{', '.join(f'LIMIT ${n}' for n in limits)} planned with {observed}: the rows "
                f"a call returns on average ({statement.rows:,} rows in {statement.calls:,} "
                "calls, pg_stat_statements)")
    problem = sqltext.plain_select_problem(text)
    side_effects = sorted(sqltext.functions(text) & volatile)
    if problem is None and side_effects:
        problem = f"calls {', '.join(side_effects)}, which may have side effects"
    analyze = problem is None
    if not analyze:
        result.notes.append(f"estimated only, not executed: the statement {problem}")
    with_rls = any(t.rls for t in tables.values())
    for label, values in sets.items():
        owner = await planner.run(text, values, role="owner", label=label, analyze=analyze)
        result.runs.append(owner)
        if app is not None and with_rls:
            as_app = await planner.run(text, values, role="app", label=label, analyze=analyze,
                                       app=app)
            result.runs.append(as_app)
    if types and analyze and mode != "force_custom_plan":
        result.generic_run = await _generic_run(planner, text, result, app, mode)
    _conclude(result, tables, app, sqltext.command(text), mode)
    return result


def _as_application(result: QueryResult) -> list[PlanRun]:
    """The runs made the way the application runs the statement: as its role when it was
    planned as that role and most calls go through RLS, else as the owner."""
    app_runs = [r for r in result.runs if r.role == "app"]
    if app_runs and result.statement.runs_as_app:
        return app_runs
    return [r for r in result.runs if r.role == "owner"]


async def _generic_run(planner: Planner, text: str, result: QueryResult,
                       app: AppIdentity | None, mode: str) -> PlanRun | None:
    """The generic plan a driver's prepared statement may settle on, with the most common
    values (else those of the slowest run): planned, then executed only when PostgreSQL would
    choose it and it is not the plan made for those values. A plan made for an average value
    can be far slower for a heavy one."""
    runs = _as_application(result)
    measured = [r for r in runs if r.ms is not None]
    own = next((r for r in measured if r.label == "common"), slowest(measured))
    if own is None:
        return None

    async def generic(analyze: bool) -> PlanRun:
        return await planner.run(text, own.values, role=own.role, label=own.label,
                                 analyze=analyze, app=app if own.role == "app" else None,
                                 generic=True)

    planned = await generic(analyze=False)
    if planned.plan is None or not findings.may_switch(planned.plan, own, runs, mode):
        return planned
    executed = await generic(analyze=True)
    if executed.plan is None:  # e.g. it did not finish: what it was, and its cost, are known
        executed.plan = planned.plan
    elif executed.ms is not None and own.ms is not None and executed.ms > own.ms:
        # The two are compared: the value's own (fast) plan timed once more, its best time
        # kept, so that one slow moment of a busy server does not hide the difference.
        again = await planner.run(text, own.values, role=own.role, label=own.label,
                                  analyze=True, app=app if own.role == "app" else None)
        if again.ms is not None:
            own.ms = min(own.ms, again.ms)
    return executed


def _conclude(result: QueryResult, tables: dict[str, Table], app: AppIdentity | None,
              command: str | None, mode: str = "auto") -> None:
    owner_runs = [r for r in result.runs if r.role == "owner"]
    app_runs = [r for r in result.runs if r.role == "app"]
    main = slowest(owner_runs)
    result.plan_summary = findings.summarize(main.plan if main else None, tables)
    if app_runs:
        by_label = {r.label: r for r in owner_runs}
        for run in app_runs:
            owner = by_label.get(run.label)
            if owner and run.plan and owner.plan and (
                    findings.plan_shape(run.plan) != findings.plan_shape(owner.plan)):
                result.app_plan_differs = True
        app_main = slowest(app_runs)
        if app_main is not None:
            result.app_plan_summary = findings.summarize(app_main.plan, tables)
    found = []
    for run in sorted(result.runs, key=lambda r: -(r.ms or 0)):
        found += findings.plan_findings(run, tables)
        timeout = findings.timeout_finding(run)
        if timeout is not None:
            found.append(timeout)
    trap = findings.generic_plan_finding(result.generic_run, _as_application(result), tables,
                                         mode)
    if trap is not None:
        found.insert(0, trap)
    for table in tables.values():
        found += findings.policy_findings(table, app.role if app else None, command)
    result.findings = findings.dedupe(found)
    failed = [r for r in result.runs if r.plan is None]
    if failed and len(failed) == len(result.runs) and not any(
            f.kind == "timeout" for f in result.findings):
        result.error = f"could not be planned: {failed[0].error}"


