"""What every benchmark here shares: argument checks, percentiles, ratios, progress on stderr;
and for the advisor benches, the tables' catalog facts, the per-query single-column baseline,
and building an index set for real."""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from bot import sqltext, tools
from bot.advisor.model import Candidate
from bot.analysis.plan import Planner
from bot.db import connect
from bot.settings import Settings


def forget_configuration() -> None:
    """Drop the caller's HOTDATA_*/SLACK_* variables: hotdata in the bench sees the bench's
    configuration only (the same environment bot.tools gives the tools it runs)."""
    keep = tools.clean_env()
    for key in [k for k in os.environ if k not in keep]:
        del os.environ[key]


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


def nearest_rank(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def median_ratio(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def logger(name: str) -> Callable[[str], None]:
    """Progress lines on stderr, so stdout carries only the JSON figures."""
    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)
    return log


# --- the tables ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: tuple[str, ...]
    indexed: frozenset[str]  # columns that already lead an index (the keys)


def table_info(conn: psycopg.Connection[Any], names: Sequence[str]) -> dict[str, TableInfo]:
    """Catalog lookup of tables (as the statements name them) and their columns."""
    found = {}
    for name in names:
        row = conn.execute(
            "SELECT n.nspname, c.relname, array(SELECT a.attname::text FROM pg_attribute a "
            "  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "  ORDER BY a.attnum), "
            "array(SELECT a.attname::text FROM pg_index i JOIN pg_attribute a "
            "  ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "  WHERE i.indrelid = c.oid AND i.indpred IS NULL) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s)", (name,)).fetchone()
        if row is None:
            raise SystemExit(f"table {name} not found")
        found[name] = TableInfo(row[0], row[1], tuple(row[2]), frozenset(row[3]))
    return found


def referenced_columns(text: str, tables: dict[str, TableInfo], *,
                       star: bool = False) -> dict[str, list[str]]:
    """table name → every column of it the statement references (pglast), in order of use;
    with `star`, `*` and `alias.*` stand for every column of their tables."""
    stmt = sqltext.parse_one(text).stmt
    aliases: dict[str, str] = {}
    for rel in sqltext.relations(stmt):
        aliases[rel.alias or rel.name] = rel.name
        aliases.setdefault(rel.name, rel.name)
    used = sorted(set(aliases.values()))
    found: dict[str, list[str]] = {name: [] for name in used}
    for node, _ in sqltext.walk(stmt):
        if not isinstance(node, ast.ColumnRef):
            continue
        fields = node.fields or ()
        names = [f.sval for f in fields if isinstance(f, ast.String)]
        if any(isinstance(f, ast.A_Star) for f in fields):
            if star:
                owners = [aliases[names[-1]]] if names and names[-1] in aliases else used
                for owner in owners:
                    found[owner] += [c for c in tables[owner].columns if c not in found[owner]]
            continue
        if not names:
            continue
        if len(names) >= 2:
            owners = [aliases[names[-2]]] if names[-2] in aliases else []
        else:
            owners = [t for t in used if names[0] in tables[t].columns]
        for owner in owners:
            if names[-1] in tables[owner].columns and names[-1] not in found[owner]:
                found[owner].append(names[-1])
    return found


# --- the per-query baseline ------------------------------------------------------------------

@dataclass
class BaselineChoice:
    statement: str
    candidate: Candidate | None
    cost_before: float
    cost_after: float
    tried: dict[str, float] = field(default_factory=dict)  # index sql → mean relative cost


# (label, text with $n, the value sets to cost it with, each one value per $n as text)
Costed = tuple[str, str, list[list[str | None]]]


async def single_column_baseline(settings: Settings, statements: Sequence[Costed],
                                 tables: dict[str, TableInfo],
                                 log: Callable[[str], None]) -> list[BaselineChoice]:
    """What a per-query advisor would build: for each statement, every column it references on
    each of its tables (but those a key already leads with) costed as a single-column HypoPG
    index over its value sets; the one with the lowest mean relative cost is kept if it lowers
    the cost at all. `tables` maps each name a statement uses to the table an index goes on
    (a view's name may map to its base table)."""
    choices = []
    async with connect(settings, "analysis") as conn:
        planner = Planner(conn, settings.statement_timeout_ms)
        for label, text, value_sets in statements:
            base = await planner.estimate(text, value_sets, app=None, hypothetical=[])
            best: tuple[float, Candidate, list[float]] | None = None
            tried = {}
            for name, columns in referenced_columns(text, tables).items():
                info = tables[name]
                for column in columns:
                    if column in info.indexed:
                        continue  # a key already leads with it: nothing to build
                    candidate = Candidate(info.schema, info.name, (column,))
                    costs = await planner.estimate(text, value_sets, app=None,
                                                   hypothetical=[candidate.create_sql()])
                    relative = sum(c / b if b > 0 else 1.0
                                   for c, b in zip(costs, base, strict=True)) / len(base)
                    tried[candidate.create_sql()] = round(relative, 4)
                    if relative < 1.0 - 1e-9 and (best is None or relative < best[0]):
                        best = (relative, candidate, costs)
            choice = BaselineChoice(label, best[1] if best else None, base[0],
                                    best[2][0] if best else base[0], tried)
            log(f"baseline {label}: "
                + (f"{choice.candidate.create_sql()} (cost {choice.cost_before:.1f} → "
                   f"{choice.cost_after:.1f})" if choice.candidate else "no index lowers it"))
            choices.append(choice)
    return choices


# --- index sets, built for real --------------------------------------------------------------

OWN_INDEXES_SQL = """
SELECT n.nspname AS schema, ci.relname AS name, pg_relation_size(i.indexrelid) AS bytes
FROM pg_index i
JOIN pg_class ci ON ci.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ci.relnamespace
WHERE i.indrelid = ANY(%s::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                  WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                    AND c.contype IN ('p', 'u', 'x'))
ORDER BY ci.relname
"""


def own_indexes(conn: psycopg.Connection[Any],
                tables: Sequence[str]) -> list[tuple[str, str, int]]:
    """(schema, name, bytes) of every index on `tables` that backs no constraint."""
    return [(r[0], r[1], int(r[2])) for r in conn.execute(OWN_INDEXES_SQL, (list(tables),))]


def build(conn: psycopg.Connection[Any], statements: Sequence[str],
          tables: Sequence[str]) -> float:
    """Drop the previous set on `tables`, build this one (autocommit: CONCURRENTLY works),
    VACUUM ANALYZE the tables; the seconds the builds took."""
    for schema, name, _ in own_indexes(conn, tables):
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))
    started = time.perf_counter()
    for statement in statements:
        conn.execute(statement)
    seconds = time.perf_counter() - started
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(
        sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    return seconds


# What executing a replay took the server, without the client's share of each call (the round
# trip, binding, fetching): the part an index can change.
SERVER_SECONDS_SQL = """
SELECT coalesce(sum(total_exec_time), 0) / 1000 FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%pg_stat_statements%'
"""
