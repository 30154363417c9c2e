"""Plan regressions. Every stored analysis keeps each statement's plan shape per role: the
node types, relations and indexes top down (so the join order too), with estimated and actual
rows. The next analysis compares: a statement whose shape changed and whose measured time got
worse is a `plan_regression` finding, with what changed and, when hotdata can tell, why (an
index dropped or invalid, a migration applied in between, a planner setting changed, rows the
planner misestimates)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bot.analysis import findings
from bot.analysis.model import Analysis, Finding, QueryResult, slowest
from bot.catalog import TAG, Table

Conn = psycopg.AsyncConnection[dict[str, Any]]

# The settings that change plans, as the analysis role sees them (role settings included).
PLANNER_SETTINGS = (
    "work_mem", "random_page_cost", "seq_page_cost", "effective_cache_size",
    "effective_io_concurrency", "cpu_tuple_cost", "cpu_index_tuple_cost",
    "default_statistics_target", "enable_seqscan", "enable_indexscan", "enable_indexonlyscan",
    "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin", "enable_nestloop",
    "enable_sort", "enable_hashagg", "jit", "plan_cache_mode",
    "max_parallel_workers_per_gather", "from_collapse_limit", "join_collapse_limit")
LIMITS = findings.Thresholds()  # a misestimate is what the `misestimate` finding calls one
SETTINGS_SQL = TAG + "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)"


@dataclass(frozen=True)
class Limits:
    """When a changed plan is a regression: this many times slower, and by at least this."""

    ratio: float = 2.0
    min_ms: float = 5.0


@dataclass
class Shape:
    """One statement's plan, as one role ran it, reduced to what makes it that plan."""

    statement: str  # sqltext.identity
    role: str
    query: str
    nodes: list[dict[str, Any]]  # type, relation, index, estimated, actual: top down
    summary: str
    ms: float | None  # the run's measured time (None: planned only)

    @property
    def fingerprint(self) -> str:
        key = [[n["type"], n["relation"], n["index"]] for n in self.nodes]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()


@dataclass
class Before:
    """A statement's shape in an earlier analysis, with when and under which settings."""

    analysis_id: int
    finished_at: datetime
    settings: dict[str, str]
    shape: Shape


@dataclass
class Change:
    """One statement in two analyses."""

    before: Shape
    after: Shape
    changes: list[str] = field(default_factory=list)

    @property
    def plan_changed(self) -> bool:
        return self.before.fingerprint != self.after.fingerprint

    @property
    def slower(self) -> float | None:
        """How many times slower it got (None when either time is unknown)."""
        if not self.before.ms or self.after.ms is None:
            return None
        return self.after.ms / self.before.ms


def _relation(node: dict[str, Any], tables: dict[str, Table]) -> str:
    """schema.name of the node's relation (plans name the schema only when VERBOSE)."""
    name = node.get("Relation Name")
    if not name:
        return ""
    for table in tables.values():
        if table.name == name and node.get("Schema") in (None, table.schema):
            return table.qualified
    return f"{node['Schema']}.{name}" if node.get("Schema") else str(name)


def _flatten(plan: dict[str, Any], tables: dict[str, Table]) -> list[dict[str, Any]]:
    """The plan's nodes top down, each reduced to what a shape keeps."""
    return [{"type": node.get("Node Type", ""), "relation": _relation(node, tables),
             "index": node.get("Index Name", ""), "estimated": float(node.get("Plan Rows", 0)),
             "actual": (float(node["Actual Rows"]) * float(node.get("Actual Loops", 1) or 1)
                        if "Actual Rows" in node else None)}
            for node, _ in findings.nodes(plan)]


def shapes(analysis: Analysis) -> list[Shape]:
    """The shape of each statement's slowest planned run, per role."""
    found = []
    for result in analysis.results:
        for role in ("owner", "app"):
            run = slowest([r for r in result.runs if r.role == role])
            if run is None or run.plan is None:
                continue
            summary = result.plan_summary if role == "owner" else result.app_plan_summary
            found.append(Shape(result.statement.identity, role, result.statement.query,
                               _flatten(run.plan["Plan"], result.tables), summary or "", run.ms))
    return found


def access_paths(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """How each relation is read: `Index Scan using idx`, `Seq Scan`, `Bitmap Heap Scan
    (idx)`; a bitmap's index scans follow their heap scan, top down."""
    paths: dict[str, str] = {}
    bitmap: str | None = None
    for node in nodes:
        if node["relation"]:
            path = node["type"] + (f" using {node['index']}" if node["index"] else "")
            paths.setdefault(node["relation"], path)
            bitmap = node["relation"] if node["type"] == "Bitmap Heap Scan" else None
        elif node["type"] == "Bitmap Index Scan" and bitmap is not None:
            heap = paths[bitmap]
            paths[bitmap] = (f"{heap[:-1]}, {node['index']})" if heap.endswith(")")
                             else f"{heap} ({node['index']})")
    return paths


def misestimates(shape: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Relation → (estimated, actual) rows where the planner was far off on its scan (as far
    as the `misestimate` finding asks)."""
    off: dict[str, tuple[float, float]] = {}
    for node in shape:
        if not node["relation"] or node["actual"] is None:
            continue
        estimated, actual = node["estimated"], node["actual"]
        high, low = max(estimated, actual), max(min(estimated, actual), 1.0)
        if high >= LIMITS.misestimate_min_rows and high / low >= LIMITS.misestimate_ratio:
            off.setdefault(node["relation"], (estimated, actual))
    return off


def _joins(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["type"] for n in nodes if n["type"] in ("Nested Loop", "Hash Join", "Merge Join")]


def changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """What changed between two plans, relation by relation, then joins and their order."""
    was, now = access_paths(before), access_paths(after)
    said = []
    for relation in dict.fromkeys([*was, *now]):
        if was.get(relation) != now.get(relation):
            said.append(f"{relation}: {was.get(relation) or 'not read'} → "
                        f"{now.get(relation) or 'not read'}")
    if _joins(before) != _joins(after):
        said.append(f"joins: {', '.join(_joins(before)) or 'none'} → "
                    f"{', '.join(_joins(after)) or 'none'}")
    if [r for r in was if r in now] != [r for r in now if r in was]:
        said.append(f"join order: {', '.join(was)} → {', '.join(now)}")
    for relation, (estimated, actual) in misestimates(after).items():
        said.append(f"{relation}: estimated {round(estimated):,} rows, got {round(actual):,}")
    return said or ["the same relations and indexes in another arrangement"]


async def planner_settings(conn: Conn) -> dict[str, str]:
    cur = await conn.execute(SETTINGS_SQL, (list(PLANNER_SETTINGS),))
    return {row["name"]: row["setting"] + (row["unit"] or "") for row in await cur.fetchall()}


PREVIOUS_SQL = """
SELECT DISTINCT ON (s.statement, s.role) s.*, a.finished_at, a.planner_settings
FROM hotdata.plan_shapes s JOIN hotdata.analyses a ON a.id = s.analysis_id
WHERE a.status = 'done' AND a.report->>'database' = %s AND s.statement = ANY(%s)
  AND a.id <> coalesce(%s, 0)
ORDER BY s.statement, s.role, s.analysis_id DESC
"""


def _shape(row: dict[str, Any]) -> Shape:
    return Shape(row["statement"], row["role"], row["query"], row["nodes"], row["summary"],
                 row["ms"])


async def previous(state: Conn, analysis: Analysis) -> dict[tuple[str, str], Before]:
    """Each statement's latest shape per role in an earlier analysis of the same database."""
    identities = [r.statement.identity for r in analysis.results]
    cur = await state.execute(PREVIOUS_SQL, (analysis.database, identities, analysis.id))
    return {(row["statement"], row["role"]): Before(
        row["analysis_id"], row["finished_at"], row["planner_settings"] or {}, _shape(row))
        for row in await cur.fetchall()}


async def keep(state: Conn, analysis_id: int, analysis: Analysis) -> None:
    """Store the analysis' shapes and planner settings (it is stored as `analysis_id`)."""
    async with state.transaction():
        await state.execute("UPDATE hotdata.analyses SET planner_settings = %s WHERE id = %s",
                            (Jsonb(analysis.planner_settings), analysis_id))
        async with state.cursor() as cur:
            await cur.executemany(
                "INSERT INTO hotdata.plan_shapes (analysis_id, statement, role, query, "
                "fingerprint, nodes, summary, ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [(analysis_id, s.statement, s.role, s.query, s.fingerprint, Jsonb(s.nodes),
                  s.summary, s.ms) for s in shapes(analysis)])


APPLIED_SQL = """
SELECT p.id, p.sql, p.table_name, p.decided_by, l.at,
       p.evidence->>'action' AS action, p.evidence->>'index' AS index
FROM hotdata.audit_log l JOIN hotdata.proposals p ON p.id = l.proposal_id
WHERE l.action = 'applied' AND l.at > %s ORDER BY l.at
"""


async def _causes(state: Conn, before: Before, after: Shape, now: dict[str, str],
                  tables: dict[str, Table]) -> tuple[list[str], list[str]]:
    """Why the plan changed, as far as hotdata can tell, and what to do: (causes, fixes)."""
    causes: list[str] = []
    fixes: list[str] = []
    cur = await state.execute(APPLIED_SQL, (before.finished_at,))
    applied = await cur.fetchall()
    indexes = {i.name: i for t in tables.values() for i in t.indexes}
    used_before = {n["index"] for n in before.shape.nodes if n["index"]}
    used_now = {n["index"] for n in after.nodes if n["index"]}
    for name in sorted(used_before - used_now):
        by = [a for a in applied if a["action"] == "drop" and a["index"] == name]
        if name in indexes and not indexes[name].valid:
            causes.append(f"index {name} is invalid")
            fixes.append(f"rebuild {name} (REINDEX INDEX CONCURRENTLY {name})")
        elif name not in indexes:
            causes.append(f"index {name} was dropped" + (
                f" by index migration #{by[-1]['id']} (approved by <@{by[-1]['decided_by']}>, "
                f"applied {by[-1]['at']:%Y-%m-%d %H:%M} UTC)" if by else
                " outside hotdata (no index migration dropped it)"))
            fixes.append(f"recreate {name}" + (
                f" (`/hotdata propose` after the next analysis, or roll back #{by[-1]['id']})"
                if by else ""))
    relations = {n["relation"] for n in [*before.shape.nodes, *after.nodes] if n["relation"]}
    for row in applied:
        if row["table_name"] in relations and not (
                row["action"] == "drop" and row["index"] in used_before - used_now):
            causes.append(f"index migration #{row['id']} was applied on {row['table_name']} at "
                          f"{row['at']:%Y-%m-%d %H:%M} UTC ({row['action']} {row['index']})")
            fixes.append(f"check #{row['id']}: its card offers Propose rollback")
    changed = sorted(name for name in set(before.settings) | set(now)
                     if before.settings and before.settings.get(name) != now.get(name))
    for name in changed:
        causes.append(f"{name} changed from {before.settings.get(name, 'unset')} to "
                      f"{now.get(name, 'unset')}")
    if changed:
        fixes.append(f"restore {', '.join(changed)} (ALTER ROLE / ALTER DATABASE … SET), or "
                     "keep the change if it was meant")
    for relation, (estimated, actual) in misestimates(after.nodes).items():
        causes.append(f"the planner estimated {round(estimated):,} rows on {relation} and got "
                      f"{round(actual):,}: its statistics look stale")
        fixes.append(f"ANALYZE {relation}")
    return causes, fixes


async def regressions(state: Conn, analysis: Analysis, limits: Limits = Limits()) -> int:
    """Add a `plan_regression` finding (first) to each statement of `analysis` whose plan
    shape changed since the latest earlier analysis and whose time got worse past `limits`;
    how many."""
    earlier = await previous(state, analysis)
    by_identity: dict[str, QueryResult] = {r.statement.identity: r for r in analysis.results}
    found = 0
    for shape in shapes(analysis):
        before = earlier.get((shape.statement, shape.role))
        if before is None:
            continue
        change = Change(before.shape, shape)
        slower = change.slower
        if not change.plan_changed or slower is None or slower < limits.ratio or \
                (shape.ms or 0) - (before.shape.ms or 0) < limits.min_ms:
            continue
        result = by_identity[shape.statement]
        causes, fixes = await _causes(state, before, shape, analysis.planner_settings,
                                      result.tables)
        what = changes(before.shape.nodes, shape.nodes)
        first = next((n["relation"] for n in shape.nodes if n["relation"]), None)
        result.findings.insert(0, Finding(
            "plan_regression", first,
            f"the {shape.role} plan changed since analysis #{before.analysis_id} "
            f"({before.finished_at:%Y-%m-%d %H:%M} UTC) and got {slower:.1f} times slower: "
            f"{before.shape.ms:.1f} ms → {shape.ms:.1f} ms. Changed: {'; '.join(what)}. "
            f"Before: {before.shape.summary}. Now: {shape.summary}. Likely cause: "
            + ("; ".join(causes) if causes else "none hotdata can see (same indexes, "
               "settings and migrations): the data changed under the planner"),
            "; ".join(fixes) if fixes else "ANALYZE the tables it reads, then compare the "
            "estimates with `/hotdata analyze compare`"))
        found += 1
    return found


LAST_TWO_SQL = """
SELECT a.id, a.finished_at FROM hotdata.analyses a
WHERE a.status = 'done' AND EXISTS (SELECT FROM hotdata.plan_shapes s WHERE s.analysis_id = a.id)
  AND a.report->>'database' = (SELECT report->>'database' FROM hotdata.analyses
                               WHERE status = 'done' ORDER BY id DESC LIMIT 1)
ORDER BY a.id DESC LIMIT 2
"""


@dataclass
class Comparison:
    """The two latest stored analyses, statement by statement."""

    before_id: int
    before_at: datetime
    after_id: int
    after_at: datetime
    both: list[Change]
    only_before: list[Shape]
    only_after: list[Shape]


async def compare_latest(state: Conn) -> Comparison | None:
    """The latest two analyses that kept plans; None when there are fewer than two."""
    cur = await state.execute(LAST_TWO_SQL)
    rows = await cur.fetchall()
    if len(rows) < 2:
        return None
    after, before = rows
    cur = await state.execute("SELECT * FROM hotdata.plan_shapes WHERE analysis_id = ANY(%s) "
                              "ORDER BY ms DESC NULLS LAST", ([before["id"], after["id"]],))
    kept = await cur.fetchall()
    was = {(r["statement"], r["role"]): _shape(r) for r in kept
           if r["analysis_id"] == before["id"]}
    now = {(r["statement"], r["role"]): _shape(r) for r in kept
           if r["analysis_id"] == after["id"]}
    both = [Change(was[key], shape) for key, shape in now.items() if key in was]
    for change in both:
        if change.plan_changed:
            change.changes = changes(change.before.nodes, change.after.nodes)
    return Comparison(before["id"], before["finished_at"], after["id"], after["finished_at"],
                      both, [s for k, s in was.items() if k not in now],
                      [s for k, s in now.items() if k not in was])
