"""Candidate indexes from the parsed statement (pglast), its tables' RLS policies and pg_stats.

Per table: equality columns first (most selective first), then at most one range column, or
the ORDER BY columns with their direction; partial variants for predicates on rare values
(`WHERE NOT read`, `WHERE status = 'pending'`); covering variants of those (INCLUDE the other
columns the statement reads, when they are narrow) for index-only scans; single-column indexes
on join keys. Pure functions: the catalog facts come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pglast import ast
from pglast.enums.parsenodes import A_Expr_Kind, SortByDir
from pglast.enums.primnodes import BoolExprType
from pglast.stream import RawStream

from bot import sqltext
from bot.advisor.model import Candidate, quote
from bot.analysis.params import ColumnStats
from bot.analysis.plan import walk
from bot.catalog import Table

RARE = 0.25  # a value held by at most this share of rows earns a partial index
INDEX_MAX_KEYS = 32  # PostgreSQL's limit on an index's columns, INCLUDE ones too
# INCLUDE columns, together, at most this many bytes in the worst case: a covering index copies
# them into every entry, and a B-tree entry holds at most about 2,700 bytes, so an unbounded
# column (text, jsonb) could make a long value impossible to write. Only bounded types qualify.
MAX_INCLUDE_BYTES = 256
RANGE_OPERATORS = {"<", ">", "<=", ">="}


@dataclass
class Predicates:
    """What one statement asks of one table."""

    equal: list[str] = field(default_factory=list)
    constants: dict[str, tuple[str, str]] = field(default_factory=dict)  # col → (value, SQL)
    booleans: dict[str, bool] = field(default_factory=dict)
    ranges: list[str] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)  # every column read (`*`: all of them)
    outputs: list[str] = field(default_factory=list)  # … outside WHERE and JOIN … ON

    def add(self, bucket: list[str], column: str) -> None:
        if column not in bucket:
            bucket.append(column)


class _Resolver:
    """Maps column references of one statement to the table keys they belong to."""

    def __init__(self, stmt: ast.Node, tables: dict[str, Table]) -> None:
        self.tables = tables
        self.aliases: dict[str, str] = {}
        for rel in sqltext.relations(stmt):
            if rel.key in tables:
                self.aliases[rel.alias or rel.name] = rel.key
                self.aliases.setdefault(rel.name, rel.key)
        self.keys = sorted(set(self.aliases.values()))

    def read(self, node: ast.ColumnRef) -> list[tuple[str, str]]:
        """The (table key, column) pairs a reference reads; `*` and `t.*` every column."""
        if not isinstance((node.fields or ())[-1], ast.A_Star):
            ref = self.column(node)
            return [ref] if ref else []
        qualifier = sqltext.names(node.fields)
        keys = [self.aliases[qualifier[-1]]] if qualifier and qualifier[-1] in self.aliases \
            else [] if qualifier else self.keys
        return [(k, c) for k in keys for c in self.tables[k].columns]

    def column(self, node: Any) -> tuple[str, str] | None:
        while isinstance(node, ast.TypeCast):
            node = node.arg
        if not isinstance(node, ast.ColumnRef):
            return None
        names = sqltext.names(node.fields)
        if not names:
            return None
        if len(names) >= 2:
            key = self.aliases.get(names[-2])
            return (key, names[-1]) if key else None
        owners = [k for k in self.keys if names[0] in self.tables[k].columns]
        return (owners[0], names[0]) if len(owners) == 1 else None


def _has_column(node: Any) -> bool:
    """True when the expression reads a column of this query (sub-selects do not count)."""
    return any(isinstance(n, ast.ColumnRef) and not any(isinstance(p, ast.SubLink)
                                                         for p in parents)
               for n, parents in sqltext.walk(node))


def _constant(node: Any) -> Any:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node.val if isinstance(node, ast.A_Const) else None


def _bare(node: Any) -> Any:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node


def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        return [c for arg in node.args or () for c in _conjuncts(arg)]
    return [node] if node is not None else []


def _deparse(node: ast.Node) -> str:
    return str(RawStream()(node))


def _collect(node: Any, resolve: _Resolver, found: dict[str, Predicates]) -> None:
    """Add one conjunct's predicates to `found` (table key → Predicates)."""
    if isinstance(node, ast.ColumnRef) or (
            isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.NOT_EXPR):
        inner = (node.args or ())[0] if isinstance(node, ast.BoolExpr) else node
        ref = resolve.column(inner)
        if ref:
            found.setdefault(ref[0], Predicates()).booleans[ref[1]] = isinstance(node,
                                                                                 ast.ColumnRef)
        return
    if not isinstance(node, ast.A_Expr):
        return
    operator = node.name[-1].sval if node.name else ""
    if node.kind in (A_Expr_Kind.AEXPR_IN, A_Expr_Kind.AEXPR_BETWEEN):  # equality, range
        ref = resolve.column(node.lexpr)
        if ref:
            preds = found.setdefault(ref[0], Predicates())
            preds.add(preds.equal if node.kind == A_Expr_Kind.AEXPR_IN else preds.ranges, ref[1])
        return
    if node.kind != A_Expr_Kind.AEXPR_OP or operator not in {"=", *RANGE_OPERATORS}:
        return
    left, right = resolve.column(node.lexpr), resolve.column(node.rexpr)
    if left and right and left[0] != right[0]:
        for key, column in (left, right):
            preds = found.setdefault(key, Predicates())
            preds.add(preds.joins, column)
        return
    ref, other = (left, node.rexpr) if left else (right, node.lexpr)
    if ref is None or _has_column(other):
        return
    preds = found.setdefault(ref[0], Predicates())
    if operator != "=":
        preds.add(preds.ranges, ref[1])
        return
    value = _constant(other)
    if isinstance(value, ast.Boolean):
        preds.booleans[ref[1]] = bool(value.boolval)
        return
    preds.add(preds.equal, ref[1])
    if isinstance(value, ast.String) and value.sval is not None:
        # unqualified: an index predicate names no alias
        preds.constants[ref[1]] = (value.sval, f"{quote(ref[1])} = {_deparse(_bare(other))}")


def predicates(text: str, tables: dict[str, Table],
               policy_quals: dict[str, list[str]] | None = None) -> dict[str, Predicates]:
    """table key → what the statement (plus the RLS policies PostgreSQL adds) asks of it."""
    stmt = sqltext.parse_one(text).stmt
    assert stmt is not None  # a parsed statement always holds its node
    resolve = _Resolver(stmt, tables)
    found: dict[str, Predicates] = {}
    for node, _ in sqltext.walk(stmt):
        if isinstance(node, ast.SelectStmt | ast.UpdateStmt | ast.DeleteStmt):
            for conjunct in _conjuncts(node.whereClause):
                _collect(conjunct, resolve, found)
        if isinstance(node, ast.JoinExpr):
            for conjunct in _conjuncts(node.quals):
                _collect(conjunct, resolve, found)
    if isinstance(stmt, ast.SelectStmt) and stmt.sortClause:
        _order(stmt, resolve, found)
    _reads(stmt, resolve, found)
    for key, quals in (policy_quals or {}).items():
        if key not in resolve.keys:
            continue
        for qual in quals:
            _policy(qual, key, tables, found)
    return found


def _reads(stmt: ast.Node, resolve: _Resolver, found: dict[str, Predicates]) -> None:
    """Every column the statement reads, per table: what an index-only scan must hold, but
    for a partial index's predicate column that only the WHERE clause reads."""
    quals = {id(n) for node, _ in sqltext.walk(stmt)
             if isinstance(node, ast.SelectStmt | ast.UpdateStmt | ast.DeleteStmt | ast.JoinExpr)
             for n, _ in sqltext.walk(node.quals if isinstance(node, ast.JoinExpr)
                                      else node.whereClause)}
    for node, _ in sqltext.walk(stmt):
        if isinstance(node, ast.ColumnRef):
            for key, column in resolve.read(node):
                preds = found.setdefault(key, Predicates())
                preds.add(preds.reads, column)
                if id(node) not in quals:
                    preds.add(preds.outputs, column)


def _order(stmt: ast.SelectStmt, resolve: _Resolver, found: dict[str, Predicates]) -> None:
    sorts = [(resolve.column(s.node), s.sortby_dir) for s in stmt.sortClause or ()]
    refs = [(r, direction) for r, direction in sorts if r is not None]
    if not refs or len(refs) != len(sorts) or len({r[0] for r, _ in refs}) != 1:
        return
    key = refs[0][0][0]
    preds = found.setdefault(key, Predicates())
    preds.order = [f"{r[1]} DESC" if direction == SortByDir.SORTBY_DESC else r[1]
                   for r, direction in refs]


def _policy(qual: str, key: str, tables: dict[str, Table], found: dict[str, Predicates]) -> None:
    try:
        stmt = sqltext.parse_one(f"SELECT 1 FROM {quote(tables[key].schema)}."
                                 f"{quote(tables[key].name)} WHERE {qual}").stmt
    except sqltext.Unparseable:
        return
    assert isinstance(stmt, ast.SelectStmt)
    resolve = _resolver({tables[key].name: key}, {key: tables[key]})
    for conjunct in _conjuncts(stmt.whereClause):
        _collect(conjunct, resolve, found)
    _reads(stmt, resolve, found)


SCAN_CONDITIONS = ("Index Cond", "Recheck Cond", "Filter")


def _plan_table(node: dict[str, Any], tables: dict[str, Table]) -> str | None:
    name = node.get("Relation Name")
    keys = sorted(key for key, table in tables.items() if table.name == name
                  and node.get("Schema") in (None, table.schema))
    return keys[0] if keys and len({tables[k].qualified for k in keys}) == 1 else None


def _scans(node: dict[str, Any], tables: dict[str, Table]) -> dict[str, str]:
    """alias → table key of the scans in a plan (sub)tree."""
    return {n.get("Alias") or n["Relation Name"]: key for n in walk(node)
            if (key := _plan_table(n, tables)) is not None}


def _resolver(aliases: dict[str, str], tables: dict[str, Table]) -> _Resolver:
    resolve = _Resolver(ast.SelectStmt(), {})
    resolve.tables = tables
    resolve.aliases = dict(aliases)
    resolve.keys = sorted(set(aliases.values()))
    return resolve


def from_plan(plan: dict[str, Any], tables: dict[str, Table],
              bound: set[str] | None) -> dict[str, Predicates]:
    """table key → what the plan's scans filter on and its top sort orders by: the statement
    as PostgreSQL rewrote it (views, security-barrier ones too, expanded to their tables;
    ORDER BY ordinals and aliases resolved to columns), where the text alone does not say.

    The plan was made for one set of parameter values, which it shows as constants: a column
    in `bound` (compared with a `$n`; None: any column may be) is an equality, never a
    partial index's predicate tied to that one value."""
    found = _from_plan(plan, tables)
    for preds in found.values():
        for column in list(preds.booleans):
            if bound is None or column in bound:
                del preds.booleans[column]
                preds.add(preds.equal, column)
        preds.constants = {column: constant for column, constant in preds.constants.items()
                           if bound is not None and column not in bound}
    return found


def bound_columns(text: str) -> set[str] | None:
    """The columns a statement compares with its parameters, or None when one of them is
    compared with something the parse tree does not name."""
    uses = sqltext.param_uses(text)
    numbers = {node.number for node, _ in sqltext.walk(sqltext.parse_one(text).stmt)
               if isinstance(node, ast.ParamRef)}
    if any(n not in uses or (uses[n].role == "column" and not uses[n].column)
           for n in numbers):
        return None
    return {u.column for u in uses.values() if u.role == "column" and u.column}


def _from_plan(plan: dict[str, Any], tables: dict[str, Table]) -> dict[str, Predicates]:
    found: dict[str, Predicates] = {}
    for node in walk(plan):
        key = _plan_table(node, tables)
        conditions = [node[f] for f in SCAN_CONDITIONS if node.get(f)]
        if key is None or not conditions:
            continue
        alias = node.get("Alias") or tables[key].name
        try:
            stmt = sqltext.parse_one("SELECT 1 WHERE " + " AND ".join(
                f"({c})" for c in conditions)).stmt
        except sqltext.Unparseable:
            continue
        assert isinstance(stmt, ast.SelectStmt)
        resolve = _resolver({alias: key}, tables)
        for conjunct in _conjuncts(stmt.whereClause):
            _collect(conjunct, resolve, found)
    sort = _top_sort(plan)
    if sort is not None:
        try:
            stmt = sqltext.parse_one("SELECT 1 ORDER BY " + ", ".join(sort["Sort Key"])).stmt
        except sqltext.Unparseable:
            return found
        assert isinstance(stmt, ast.SelectStmt)
        _order(stmt, _resolver(_scans(sort, tables), tables), found)
    return found


def _top_sort(plan: dict[str, Any]) -> dict[str, Any] | None:
    """The Sort feeding a LIMIT (ORDER BY … LIMIT), through a Gather Merge."""
    for node in walk(plan):
        if node.get("Node Type") != "Limit":
            continue
        inner = (node.get("Plans") or [None])[0]
        while inner is not None and inner.get("Node Type") == "Gather Merge":
            inner = (inner.get("Plans") or [None])[0]
        if inner is not None and inner.get("Node Type") in ("Sort", "Incremental Sort") \
                and inner.get("Sort Key"):
            found: dict[str, Any] = inner
            return found
    return None


def merged(parsed: dict[str, Predicates], planned: dict[str, Predicates],
           tables: dict[str, Table]) -> dict[str, Predicates]:
    """The text's predicates, plus the plan's for the tables the text does not name (behind a
    view) and the plan's ORDER BY where the text's could not be read (an ordinal, an alias)."""
    by_table = {tables[k].qualified: k for k in parsed if k in tables}
    found = dict(parsed)
    for key, preds in planned.items():
        known = by_table.get(tables[key].qualified)
        if known is None:
            found[key] = preds
        elif preds.order and not any(p.order for p in parsed.values()):
            found[known].order = preds.order
    return found


def _partial(preds: Predicates, table: Table,
             stats: dict[tuple[str, str], ColumnStats]) -> tuple[str | None, set[str]]:
    """The rarest-value predicate worth a partial index, and the columns it covers."""
    best: tuple[float, str, str] | None = None
    for column, wanted in preds.booleans.items():
        found = stats.get((table.qualified, column))
        share = found.frequency("t" if wanted else "f") if found else None
        if share is not None and share <= RARE and (best is None or share < best[0]):
            best = (share, column, quote(column) if wanted else f"NOT {quote(column)}")
    for column, (value, text) in preds.constants.items():
        found = stats.get((table.qualified, column))
        share = found.frequency(value) if found else None
        if share is not None and share <= RARE and (best is None or share < best[0]):
            best = (share, column, text)
    if best is None:
        return None, set()
    return best[2], {best[1]}


def covering(keys: tuple[str, ...], preds: Predicates, table: Table, covered: set[str],
             widths: dict[str, int]) -> tuple[str, ...]:
    """INCLUDE columns that let `keys` answer the statement from the index alone (an index-only
    scan: no heap visit per row, whatever plan a prepared statement settles on), or () when
    there are none, or one has no bound in `widths` (column → most bytes), or together they
    could take more than MAX_INCLUDE_BYTES."""
    plain = {c.removesuffix(" DESC") for c in keys}
    include = tuple(c for c in table.columns if c in preds.reads and c not in plain
                    and (c not in covered or c in preds.outputs))
    if not include:
        return ()
    if any(c not in widths for c in include) or sum(widths[c] for c in include) > \
            MAX_INCLUDE_BYTES:
        return ()
    return include


def unions(pool: list[Candidate], tables: dict[str, Table],
           widths: dict[str, dict[str, int]]) -> list[Candidate]:
    """For candidates with the same key and rows that hold different columns (each statement
    its own INCLUDE), the one index holding all of them, when they fit MAX_INCLUDE_BYTES: it
    serves each of those statements from the index alone for less than two indexes would
    take, and the selection may widen either into it."""
    groups: dict[tuple[str, tuple[str, ...], str | None], list[Candidate]] = {}
    for candidate in pool:
        if candidate.include:
            key = (candidate.qualified, candidate.columns, candidate.where)
            groups.setdefault(key, []).append(candidate)
    found = []
    for (qualified, columns, where), group in groups.items():
        held = {column for candidate in group for column in candidate.include}
        if len(group) < 2 or qualified not in tables:
            continue
        include = tuple(c for c in tables[qualified].columns if c in held)
        known = widths.get(qualified, {})
        if any(c not in known for c in include) or sum(known[c] for c in include) > \
                MAX_INCLUDE_BYTES:
            continue
        union = Candidate(group[0].schema, group[0].table, columns, where, include)
        if union not in pool:
            found.append(union)
    return found


def for_table(preds: Predicates, table: Table, stats: dict[tuple[str, str], ColumnStats],
              widths: dict[str, int] | None = None) -> list[Candidate]:
    """Every candidate index one statement suggests for one table; with `widths` (column →
    the most bytes it can hold), covering variants of the composite ones too."""
    def selectivity(column: str) -> float:
        found = stats.get((table.qualified, column))
        return -(found.distinct(table.rows) if found else 0.0)

    equal = sorted([*preds.equal, *preds.booleans], key=selectivity)
    where, covered = _partial(preds, table, stats)
    tails: list[list[str]] = [[]]
    if preds.ranges:
        tails.append([preds.ranges[0]])
    if preds.order and not (preds.ranges and preds.ranges[0] != preds.order[0].split()[0]):
        tails.append(preds.order)
    found: list[Candidate] = []

    def add(columns: list[str], predicate: str | None, *, cover: bool = False) -> None:
        unique = tuple(dict.fromkeys(columns))[:INDEX_MAX_KEYS]  # the most selective first
        if unique:
            found.append(Candidate(table.schema, table.name, unique, predicate))
            include = covering(unique, preds, table, covered if predicate else set(),
                               widths) if cover and widths is not None else ()
            if include and len(unique) + len(include) <= INDEX_MAX_KEYS:
                found.append(Candidate(table.schema, table.name, unique, predicate, include))

    for tail in tails:
        add(equal + tail, None, cover=True)
        if where:
            keys = [c for c in equal if c not in covered] + tail
            add(keys or sorted(covered), where, cover=True)
    for column in [*equal, *preds.ranges, *preds.joins, *preds.order[:1]]:
        add([column], None)
    return list(dict.fromkeys(found))
