"""Step 4: what is wrong — pure functions over EXPLAIN plans and catalog facts."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from pglast import ast

from bot import sqltext
from bot.analysis.model import Finding, PlanRun
from bot.analysis.plan import average_custom_cost, generic_chosen, total_cost
from bot.catalog import Policy, Table

PER_ROW_FUNCTIONS = {("auth", "uid"), ("auth", "jwt"), ("auth", "role"),
                     (None, "current_setting"), ("pg_catalog", "current_setting")}


# Nodes whose row estimates matter; a node under a Limit stops early, so its count is partial.
ESTIMATED_NODES = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan",
                   "Bitmap Index Scan", "Nested Loop", "Hash Join", "Merge Join"}


@dataclass(frozen=True)
class Thresholds:
    """When a plan node is worth a finding. Each ratio comes with a floor, so that a large
    ratio of small numbers stays quiet."""

    # seq_scan: a table at least this large read to return at most this fraction of its rows
    large_table_rows: int = 10_000
    selective_fraction: float = 0.1
    # rows_removed: a filter discarding this many rows per row returned, and at least these
    removed_ratio: float = 10.0
    removed_min_rows: int = 1_000
    # sort_limit: sorting this many rows per row returned (ORDER BY … LIMIT), and at least these
    sort_ratio: float = 10.0
    sort_min_rows: int = 1_000
    # misestimate: actual rows this many times off the estimate, either way, and at least these
    misestimate_ratio: float = 10.0
    misestimate_min_rows: int = 100
    # generic_plan: the generic plan's ms over the value's own plan's ms, and slower by this
    generic_ratio: float = 5.0
    generic_min_ms: float = 0.5
    # stale_statistics (only where a plan misestimates on the table): rows written since its
    # last ANALYZE, this fraction of its rows (twice autovacuum's default trigger) and these
    stale_fraction: float = 0.2
    stale_min_rows: int = 1_000
    # lossy_bitmap: heap blocks a bitmap kept only as whole pages, having outgrown work_mem
    lossy_min_blocks: int = 1
    # large_offset: rows an OFFSET read and discarded, per row returned, and at least these
    offset_ratio: float = 10.0
    offset_min_rows: int = 1_000
    # heap_fetches: an index-only scan visiting the table for this fraction of its rows, and
    # at least this often
    heap_fetch_fraction: float = 0.1
    heap_fetch_min: int = 1_000


def nodes(plan: dict[str, Any], parents: tuple[dict[str, Any], ...] = ()
          ) -> Iterator[tuple[dict[str, Any], tuple[dict[str, Any], ...]]]:
    yield plan, parents
    for child in plan.get("Plans", []):
        yield from nodes(child, (*parents, plan))


def _actual(node: dict[str, Any]) -> float:
    """Rows a node produced over all its loops."""
    return float(node.get("Actual Rows", 0)) * float(node.get("Actual Loops", 1) or 1)


def _removed(node: dict[str, Any]) -> float:
    return float(node.get("Rows Removed by Filter", 0)) * float(node.get("Actual Loops", 1) or 1)


def _n(value: float) -> str:
    return f"{round(value):,}"


def _condition(expression: str | None) -> ast.Node | None:
    """A plan's or a policy's condition text parsed as `SELECT 1 WHERE …`; None if it cannot be."""
    if not expression:
        return None
    try:
        return sqltext.parse_one(f"SELECT 1 WHERE {expression}").stmt
    except sqltext.Unparseable:
        return None


def filter_columns(expression: str | None) -> list[str]:
    """Columns named in a plan's Filter/Index Cond text, in order of appearance."""
    stmt = _condition(expression)
    if stmt is None:
        return []
    found: list[str] = []
    for node, _ in sqltext.walk(stmt):
        if isinstance(node, ast.ColumnRef):
            names = sqltext.names(node.fields)
            if names and names[-1] not in found:
                found.append(names[-1])
    return found


def wrapped_columns(expression: str | None) -> list[str]:
    """Columns the filter passes through a function or cast (`lower(email) = …`)."""
    stmt = _condition(expression)
    if stmt is None:
        return []
    found = []
    for node, parents in sqltext.walk(stmt):
        if isinstance(node, ast.ColumnRef) and any(
                isinstance(p, ast.FuncCall) or (isinstance(p, ast.TypeCast)
                                                and not _cast_of_constant(p)) for p in parents):
            names = sqltext.names(node.fields)
            if names:
                found.append(names[-1])
    return found


def _cast_of_constant(node: ast.TypeCast) -> bool:
    return isinstance(node.arg, ast.A_Const)


def _table(node: dict[str, Any], tables: dict[str, Table]) -> Table | None:
    name = node.get("Relation Name")
    if name is None:
        return None
    for table in tables.values():
        if table.name == name and (node.get("Schema") in (None, table.schema)):
            return table
    return None


def _scan_table(node: dict[str, Any], tables: dict[str, Table]) -> Table | None:
    for inner, _ in nodes(node):
        found = _table(inner, tables)
        if found is not None:
            return found
    return None


def _heap_table(node: dict[str, Any], parents: tuple[dict[str, Any], ...],
                tables: dict[str, Table]) -> Table | None:
    """The table a Bitmap Index Scan's index belongs to: its Bitmap Heap Scan's (the index scan
    node names only the index)."""
    if node.get("Node Type") != "Bitmap Index Scan":
        return None
    heap = next((p for p in reversed(parents) if p.get("Node Type") == "Bitmap Heap Scan"), None)
    return _table(heap, tables) if heap is not None else None


def _on_index(node: dict[str, Any]) -> str:
    return f" on {node['Index Name']}" if node.get("Index Name") else ""


def _label(table: Table | None, node: dict[str, Any]) -> str | None:
    if table is not None:
        return table.qualified
    return node.get("Relation Name")


def plan_findings(run: PlanRun, tables: dict[str, Table],
                  limits: Thresholds = Thresholds()) -> list[Finding]:
    """Findings one analysed plan shows."""
    if run.plan is None:
        return []
    found: list[Finding] = []
    root = run.plan["Plan"]
    for node, parents in nodes(root):
        kind = node.get("Node Type", "")
        table = _table(node, tables)
        where = _label(table, node)
        if kind == "Seq Scan" and table is not None and node.get("Filter"):
            found += _seq_scan(node, table, limits, run.analyzed)
        elif run.analyzed and kind != "Seq Scan" and node.get("Filter"):
            removed, returned = _removed(node), _actual(node)
            if removed >= limits.removed_min_rows and removed >= limits.removed_ratio * max(
                    returned, 1):
                columns = ", ".join(filter_columns(node.get("Filter"))) or "the filter"
                index = f" {node['Index Name']}" if node.get("Index Name") else ""
                found.append(Finding(
                    "rows_removed", where,
                    f"{kind} on {where} fetched {_n(removed + returned)} rows and its filter "
                    f"removed {_n(removed)} to keep {_n(returned)} ({node.get('Filter')})",
                    f"add {columns} to the index{index} "
                    "(or make it partial) so the scan reads only matching rows"))
        if kind == "Sort" and run.analyzed and parents and any(
                p.get("Node Type") == "Limit" for p in parents[-2:]):
            child = node.get("Plans", [{}])[0]
            sorted_rows, limit = _actual(child), _actual(parents[-1])
            if sorted_rows >= limits.sort_min_rows and sorted_rows >= limits.sort_ratio * max(
                    limit, 1):
                keys = ", ".join(node.get("Sort Key", []))
                sort_table = _scan_table(node, tables)
                found.append(Finding(
                    "sort_limit", _label(sort_table, node),
                    f"sorts {_n(sorted_rows)} rows by {keys} to return {_n(limit)}",
                    f"an index ending in ({keys}) after the filtered columns lets PostgreSQL "
                    "read rows in order and stop at the LIMIT"))
        under_limit = any(p.get("Node Type") == "Limit" for p in parents)
        if (run.analyzed and kind in ESTIMATED_NODES and not under_limit
                and "Plan Rows" in node and "Actual Rows" in node):
            estimated, actual = float(node["Plan Rows"]), float(node["Actual Rows"])
            high, low = max(estimated, actual), max(min(estimated, actual), 1.0)
            if high >= limits.misestimate_min_rows and high / low >= limits.misestimate_ratio:
                est_table = table or _heap_table(node, parents, tables) or _scan_table(
                    node, tables)
                target = est_table.qualified if est_table else "the tables involved"
                found.append(Finding(
                    "misestimate", _label(est_table, node),
                    f"{kind}{_on_index(node)} estimated {_n(estimated)} rows per loop, got "
                    f"{_n(actual)} ({high / low:.0f} times off)",
                    f"ANALYZE {target}; if it persists, raise the statistics target of the "
                    "filtered columns or add extended statistics (CREATE STATISTICS)"))
                found += _stale_statistics(node, tables, limits, estimated, actual)
        spilled = int(node.get("Temp Written Blocks", 0) or 0)
        if spilled or node.get("Sort Space Type") == "Disk" or int(
                node.get("Hash Batches", 1) or 1) > 1:
            found.append(Finding(
                "temp_spill", _label(table or _scan_table(node, tables), node),
                f"{kind} spilled to disk ({spilled * 8:,} kB of temporary files)",
                "raise work_mem for this workload's role (ALTER ROLE … SET work_mem) or shrink "
                "the sort/hash with a more selective index"))
        if run.analyzed and kind == "Bitmap Heap Scan":
            found += _lossy_bitmap(node, where, limits)
        if run.analyzed and kind == "Index Only Scan":
            found += _heap_fetches(node, table, where, limits)
        if run.analyzed and kind == "Limit":
            found += _large_offset(node, tables, limits)
    return found


def _seq_scan(node: dict[str, Any], table: Table, limits: Thresholds,
              analyzed: bool) -> list[Finding]:
    if table.rows < limits.large_table_rows:
        return []
    returned = _actual(node) if analyzed else float(node.get("Plan Rows", 0))
    read = returned + _removed(node) if analyzed else float(table.rows)
    if read <= 0 or returned / max(read, 1) >= limits.selective_fraction:
        return []
    findings = []
    columns = filter_columns(node.get("Filter"))
    wrapped = set(wrapped_columns(node.get("Filter")))
    for index in table.indexes:
        lead = index.keys[0] if index.keys else ""
        if lead in columns and not index.valid:
            findings.append(Finding(
                "unusable_index", table.qualified,
                f"index {index.name} on ({', '.join(index.sort_keys)}) is invalid (a failed "
                "concurrent build), so the planner cannot use it",
                f"DROP INDEX CONCURRENTLY {index.name}; then recreate it CONCURRENTLY"))
        elif lead in wrapped:
            findings.append(Finding(
                "unusable_index", table.qualified,
                f"index {index.name} on ({', '.join(index.sort_keys)}) cannot serve the filter "
                f"{node.get('Filter')}: the column is wrapped in a function or cast",
                f"compare the bare column {lead} (cast the parameter instead), or index the "
                "expression itself"))
    findings.append(Finding(
        "seq_scan", table.qualified,
        f"Seq Scan on {table.qualified} reads {_n(read)} rows to return {_n(returned)} "
        f"(filter {node.get('Filter')})",
        f"index {table.qualified} on ({', '.join(columns) or 'the filtered columns'}) — see "
        "the recommendations"))
    return findings


def _stale_statistics(node: dict[str, Any], tables: dict[str, Table], limits: Thresholds,
                      estimated: float, actual: float) -> list[Finding]:
    """The tables a misestimating node reads whose statistics predate many of their writes."""
    found = []
    for inner, _ in nodes(node):
        table = _table(inner, tables)
        changed = table.modified_since_analyze if table else 0
        if table is None or changed < max(limits.stale_min_rows,
                                          limits.stale_fraction * table.rows):
            continue
        when = (f"{table.analyzed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if table.analyzed_at
                else "none on record")
        found.append(Finding(
            "stale_statistics", table.qualified,
            f"{_n(changed)} rows of {table.qualified} were written since its last ANALYZE "
            f"({when}; its statistics count about {_n(table.rows)} rows), and the plan "
            f"misestimates on it: {node.get('Node Type')} estimated {_n(estimated)} rows, got "
            f"{_n(actual)}",
            f"ANALYZE {table.qualified}; if it keeps happening, have autovacuum analyse it "
            f"sooner: ALTER TABLE {table.qualified} SET (autovacuum_analyze_scale_factor = "
            "0.02) (the default waits for 10 % of the rows to change)"))
    return found


# An exact TID bitmap holds about this many bytes per heap block (tidbitmap.c: a 48-byte page
# entry and two pointers); past work_mem / 64 blocks it keeps whole pages instead (lossy).
BITMAP_BYTES_PER_BLOCK = 64


def _lossy_bitmap(node: dict[str, Any], where: str | None, limits: Thresholds
                  ) -> list[Finding]:
    # PostgreSQL 18 shows a parallel scan's workers apart from the leader: their blocks add up.
    parts = [node, *node.get("Workers", [])]
    lossy = sum(float(p.get("Lossy Heap Blocks", 0) or 0) for p in parts)
    if lossy < limits.lossy_min_blocks:
        return []
    blocks = lossy + sum(float(p.get("Exact Heap Blocks", 0) or 0) for p in parts)
    loops = max(float(node.get("Actual Loops", 1) or 1), 1.0)
    rechecked = float(node.get("Rows Removed by Index Recheck", 0) or 0) * loops
    # One bitmap per loop (rescans under a join), but a parallel scan's processes share one.
    per_bitmap = blocks if node.get("Parallel Aware") else blocks / loops
    need_mb = max(1, math.ceil(per_bitmap * BITMAP_BYTES_PER_BLOCK / 1024 / 1024))
    return [Finding(
        "lossy_bitmap", where,
        f"Bitmap Heap Scan on {where} outgrew work_mem: {_n(lossy)} of its {_n(blocks)} heap "
        f"blocks were kept only as whole pages, so every row on them was read and rechecked "
        f"({_n(rechecked)} rows removed by the recheck)",
        f"raise work_mem to at least {need_mb}MB for this workload's role (ALTER ROLE … SET "
        f"work_mem = '{need_mb}MB'): an exact bitmap needs about {BITMAP_BYTES_PER_BLOCK} "
        f"bytes per heap block and this one covers {_n(per_bitmap)} blocks; or a more "
        "selective index, so that fewer blocks match")]


def _heap_fetches(node: dict[str, Any], table: Table | None, where: str | None,
                  limits: Thresholds) -> list[Finding]:
    fetches, rows = float(node.get("Heap Fetches", 0) or 0), _actual(node)  # both over all loops
    if fetches < limits.heap_fetch_min or fetches < limits.heap_fetch_fraction * max(rows, 1):
        return []
    target = table.qualified if table else where
    return [Finding(
        "heap_fetches", where,
        f"Index Only Scan using {node.get('Index Name')} on {where} went to the table "
        f"{_n(fetches)} times for {_n(rows)} rows: the visibility map does not mark those pages "
        "all-visible, so the scan is not index-only",
        f"VACUUM {target} (it updates the visibility map); if it keeps happening, have "
        f"autovacuum vacuum it sooner: ALTER TABLE {target} SET "
        "(autovacuum_vacuum_scale_factor = 0.02), and autovacuum_vacuum_insert_scale_factor "
        "for a table that mostly grows")]


def _large_offset(node: dict[str, Any], tables: dict[str, Table], limits: Thresholds
                  ) -> list[Finding]:
    """A Limit whose input produced far more rows than it returned. Without an OFFSET a Limit
    stops reading at its count (WITH TIES reads the ties, and returns them), so the difference
    is what the OFFSET read and threw away."""
    children = node.get("Plans") or []
    if not children:
        return []
    returned = _actual(node)
    skipped = _actual(children[0]) - returned
    if skipped < limits.offset_min_rows or skipped < limits.offset_ratio * max(returned, 1):
        return []
    keys, source = _order(children[0], tables)
    page = round(float(node.get("Actual Rows", 0) or 0)) or "n"
    descending = {" DESC" in k for k in keys}
    if keys and len(descending) == 1:
        after = "<" if descending == {True} else ">"
        keyset = (f"WHERE ({', '.join(_bare(k) for k in keys)}) {after} (the last row's "
                  f"values) ORDER BY {', '.join(keys)} LIMIT {page}")
    elif keys:
        keyset = (f"ORDER BY {', '.join(keys)} LIMIT {page}, each page starting after the "
                  "last row's values, key by key in each key's direction (a row comparison "
                  "needs all keys in one direction)")
    else:
        keyset = (f"WHERE (sort key) > (the last row's values) ORDER BY sort key LIMIT {page}")
    table = _scan_table(node, tables)
    return [Finding(
        "large_offset", _label(table, node),
        f"OFFSET reads and discards {_n(skipped)} rows to return {_n(returned)}"
        + (f" (in the order of {source})" if source else ""),
        f"paginate by key instead of OFFSET (keyset pagination): {keyset}, remembering the "
        "last row of each page; end the key with a unique column (e.g. the primary key) when "
        "it is not unique, and an index on the key lets every page start where the last one "
        "ended")]


def _bare(key: str) -> str:
    """A sort key without its direction: `created_at DESC NULLS LAST` → `created_at`."""
    return re.sub(r"\s+(ASC|DESC|NULLS FIRST|NULLS LAST)\b", "", key)


def _order(node: dict[str, Any], tables: dict[str, Table]) -> tuple[list[str], str | None]:
    """The keys rows reach a Limit in, down its input's outer path: the first Sort's keys,
    else those of the index scan that reads them in order (then named too), less the leading
    keys its condition holds equal."""
    current: dict[str, Any] | None = node
    while current is not None:
        if current.get("Sort Key"):
            return list(current["Sort Key"]), None
        if current.get("Node Type") in ("Index Scan", "Index Only Scan"):
            table = _table(current, tables)
            name = current.get("Index Name")
            index = next((i for i in table.indexes if i.name == name), None) if table else None
            if index is None:
                return [], f"index {name}" if name else None
            keys = index.sort_keys
            pinned = set(re.findall(r"(\w+) = (?!ANY)", current.get("Index Cond") or ""))
            while keys and _bare(keys[0]) in pinned:
                keys = keys[1:]
            if current.get("Scan Direction") == "Backward":
                keys = [k[:-5] if k.endswith(" DESC") else f"{k} DESC" for k in keys]
            return keys, f"index {name}"
        children = current.get("Plans") or []
        current = children[0] if children else None
    return [], None


def per_row_calls(expression: str | None) -> list[str]:
    """`auth.uid()`-style calls in a policy expression that are not wrapped in `(SELECT …)`.

    Outside a sub-select PostgreSQL may call them once per row; inside one they become an
    InitPlan evaluated once per query.
    """
    stmt = _condition(expression)
    if stmt is None:
        return []
    calls = []
    for node, parents in sqltext.walk(stmt):
        if isinstance(node, ast.FuncCall) and not any(isinstance(p, ast.SubLink)
                                                      for p in parents):
            names = tuple(sqltext.names(node.funcname))
            key = (names[0], names[1]) if len(names) == 2 else (None, names[-1])
            if key in PER_ROW_FUNCTIONS:
                calls.append(".".join(names) + "()")
    return calls


def policy_findings(table: Table, app_role: str | None, command: str | None) -> list[Finding]:
    """Per-row calls in the policies PostgreSQL adds to this statement (its role, its command)."""
    found = []
    for policy in table.policies:
        if not _applies(policy, app_role) or policy.command not in ("ALL", command):
            continue
        for expression in (policy.qual, policy.with_check):
            calls = per_row_calls(expression)
            if calls:
                found.append(Finding(
                    "rls_per_row", table.qualified,
                    f"policy {policy.name} calls {', '.join(sorted(set(calls)))} for every row: "
                    f"{expression}",
                    "wrap the call in a sub-select, e.g. USING (user_id = (select auth.uid())), "
                    "so it is evaluated once per query"))
                break
    return found


def _applies(policy: Policy, app_role: str | None) -> bool:
    return app_role is None or "public" in policy.roles or app_role in policy.roles


def may_switch(generic: dict[str, Any], own: PlanRun, runs: list[PlanRun],
               mode: str = "auto") -> bool:
    """Whether PostgreSQL would settle on `generic` for a prepared statement (under
    plan_cache_mode `mode`; in auto, when it costs less than the average of the plans made per
    value, `runs`) and run it differently from the plan made for `own`'s values."""
    custom = [r.plan for r in runs if r.plan is not None]
    return (bool(custom) and own.plan is not None and generic_chosen(generic, custom, mode)
            and plan_shape(generic) != plan_shape(own.plan))


def generic_plan_finding(generic: PlanRun | None, runs: list[PlanRun], tables: dict[str, Table],
                         mode: str = "auto", limits: Thresholds = Thresholds()
                         ) -> Finding | None:
    """A statement that is fast when planned for its values but slow once prepared.

    Drivers prepare a statement they run often (psycopg from its sixth execution, JDBC from
    its fifth, asyncpg and named node-postgres statements at once). After five custom plans
    PostgreSQL may switch to one generic plan, planned for an average value, when it costs
    less than the average custom plan; for a heavy value it can be many times slower. `runs`
    are the statement's plans made the way the application runs it; `generic` is the generic
    plan, executed with the values of one of them (the most common), or only planned when it
    would not be chosen or is the same plan; a run that hit the statement timeout counts as
    slow. `mode` is the application's plan_cache_mode.
    """
    if generic is None or generic.plan is None or not generic.analyzed:
        return None
    own = next((r for r in runs if r.values == generic.values and r.plan is not None), None)
    if own is None or own.ms is None or not may_switch(generic.plan, own, runs, mode):
        return None
    if generic.ms is None:
        if not (generic.error or "").startswith("did not finish"):
            return None
        took = generic.error
    elif (generic.ms < limits.generic_ratio * own.ms
          or generic.ms - own.ms < limits.generic_min_ms):
        return None
    else:
        took = f"takes {generic.ms:.2f} ms"
    custom = [r.plan for r in runs if r.plan is not None]
    table = _scan_table(generic.plan["Plan"], tables)
    why = ("plan_cache_mode is force_generic_plan" if mode == "force_generic_plan" else
           f"cost {total_cost(generic.plan):,.0f} against {average_custom_cost(custom):,.0f} "
           "on average for plans made per value")
    return Finding(
        "generic_plan", _label(table, generic.plan["Plan"]),
        f"once a driver prepares it, PostgreSQL is expected to run this statement under one "
        f"generic plan ({why}); with the "
        f"{own.label} value that plan {took} ({summarize(generic.plan, tables)}) against "
        f"{own.ms:.2f} ms planned for that value ({summarize(own.plan, tables)})",
        "plan it for each value: SET plan_cache_mode = force_custom_plan in the sessions "
        "that run it (or ALTER ROLE … SET plan_cache_mode = force_custom_plan when most of "
        "the role's statements are skewed like this; every call is then planned), or have "
        "the driver not prepare it; an index that answers it alone (an index-only scan) "
        "makes the generic plan fast too")


def timeout_finding(run: PlanRun) -> Finding | None:
    if run.error and run.error.startswith("did not finish"):
        return Finding("timeout", None, f"EXPLAIN ANALYZE {run.error} (values: {run.label})",
                       "look at the plan below; this statement needs an index or a rewrite "
                       "before it can even be measured")
    return None


def dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per kind and table (the first, which comes from the heaviest values)."""
    seen: set[tuple[str, str | None]] = set()
    unique = []
    for finding in findings:
        key = (finding.kind, finding.table)
        if key not in seen:
            seen.add(key)
            unique.append(finding)
    return unique


def summarize(plan: dict[str, Any] | None, tables: dict[str, Table]) -> str:
    """One line: the plan's main path, top down, with the numbers that matter."""
    if plan is None:
        return "no plan"
    parts: list[str] = []
    node: dict[str, Any] | None = plan["Plan"]
    while node is not None and len(parts) < 5:
        kind = node.get("Node Type", "?")
        text = kind
        if node.get("Index Name"):
            text += f" using {node['Index Name']}"
        if node.get("Relation Name"):
            table = _table(node, tables)
            text += f" on {table.qualified if table else node['Relation Name']}"
        if node.get("Sort Key"):
            text += f" ({', '.join(node['Sort Key'])})"
        if "Actual Rows" in node:
            text += f" [{_n(_actual(node))} rows"
            if node.get("Rows Removed by Filter"):
                text += f", {_n(_removed(node))} removed"
            text += "]"
        parts.append(text)
        children = node.get("Plans") or []
        node = children[0] if children else None
    return " → ".join(parts)


def plan_shape(plan: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """What makes two plans the same plan: node types, relations and indexes, in order."""
    if plan is None:
        return []
    return [(n.get("Node Type", ""), n.get("Relation Name", ""), n.get("Index Name", ""))
            for n, _ in nodes(plan["Plan"])]
