"""Index advice without HypoPG: candidates costed by building them for real on a scratch copy,
inside transactions rolled back at once, never on the target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from bot import pgcluster
from bot.advisor.model import Candidate
from bot.advisor.pipeline import analyze
from bot.advisor.recommend import BUILT_NOTE, HYPOPG_HINT, Statement, WhatIfCosts
from bot.advisor.select import Workload
from bot.analysis.plan import Planner
from tests.harness import clone, drop, requires_hypopg, settings_for, watched_file

ROWS = 40_000
SCHEMA = f"""
CREATE TABLE orders AS
  SELECT g AS id, 1 + (g * 7919) % 500 AS customer_id,
         (ARRAY['paid', 'paid', 'paid', 'paid', 'refunded'])[1 + g % 5] AS status,
         now() - g * interval '1 minute' AS created_at, round((g % 1000) * 1.5, 2) AS total,
         repeat('x', 60) AS notes
  FROM generate_series(1, {ROWS}) AS g;
ALTER TABLE orders ADD PRIMARY KEY (id);
ANALYZE orders;
"""
QUERIES = [
    {"name": "latest of a customer", "calls": 2000,
     "sql": "SELECT id, created_at, total FROM orders WHERE customer_id = 42 "
            "ORDER BY created_at DESC LIMIT 20"},
    {"name": "refunds since", "calls": 500,
     "sql": "SELECT id, total FROM orders WHERE status = 'refunded' "
            "AND created_at > now() - interval '2 days'"},
]
# Every relation of the schema, with its kind and, for an index, its definition: what the
# built costing must leave as it found it.
CATALOG_SQL = """
SELECT c.relname, c.relkind, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE c.relnamespace = 'public'::regnamespace ORDER BY c.relname
"""


def catalog(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(CATALOG_SQL).fetchall()


@pytest.fixture
def shop(pg: pgcluster.Cluster, database: str) -> Iterator[tuple[str, str]]:
    """A database holding SCHEMA without HypoPG, and a copy of it made after the load; their
    URLs (target, copy)."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP EXTENSION IF EXISTS hypopg")
        conn.execute(SCHEMA)
    name = database.rsplit("/", 1)[1].split("?")[0]
    copy = clone(pg, f'"{name}"')
    try:
        yield database, pg.url(copy)
    finally:
        drop(pg, copy)


def recommended(result: Any) -> list[tuple[str, tuple[str, ...], tuple[str, ...], Any]]:
    return sorted((r["table"], tuple(r["columns"]), tuple(r["include"]), r["where"])
                  for r in result.recommendations)


async def test_without_hypopg_or_a_copy_the_note_says_how_to_get_recommendations(
        shop: tuple[str, str], tmp_path: Path) -> None:
    target, _ = shop
    result = await analyze(settings_for(target, watched_queries=watched_file(tmp_path, QUERIES)),
                           top=5)
    assert result.recommendations == []
    assert HYPOPG_HINT in result.notes
    assert "HOTDATA_SCRATCH_DATABASE_URL" in HYPOPG_HINT


async def test_candidates_built_on_the_copy_give_the_index_and_leave_nothing_behind(
        shop: tuple[str, str], tmp_path: Path) -> None:
    target, copy = shop
    before = {"target": catalog(target), "copy": catalog(copy)}
    result = await analyze(settings_for(target, watched_queries=watched_file(tmp_path, QUERIES),
                                        scratch_database_url=copy), top=5)
    assert BUILT_NOTE in result.notes, result.notes
    assert ("public.orders", ("customer_id", "created_at DESC")) in [
        (table, columns) for table, columns, *_ in recommended(result)], result.recommendations
    for rec in result.recommendations:
        assert rec["costing"] == "built"
        assert rec["size_estimated"] is False and rec["size_bytes"] > 8192
        assert rec["measured_before_ms"] is not None  # and then measured on the copy
    # no index was left on the copy, and nothing was ever built on the target
    assert catalog(copy) == before["copy"]
    assert catalog(target) == before["target"]


async def test_the_copy_must_not_be_the_target(shop: tuple[str, str], tmp_path: Path) -> None:
    target, _ = shop
    before = catalog(target)
    result = await analyze(settings_for(target, watched_queries=watched_file(tmp_path, QUERIES),
                                        scratch_database_url=target), top=5)
    assert result.recommendations == []
    assert any("points at the target database" in n for n in result.notes), result.notes
    assert catalog(target) == before


@requires_hypopg  # nothing to compare with otherwise
async def test_built_costing_recommends_what_hypopg_recommends(
        shop: tuple[str, str], tmp_path: Path) -> None:
    target, copy = shop
    watched = watched_file(tmp_path, QUERIES)
    built = await analyze(settings_for(target, watched_queries=watched,
                                       scratch_database_url=copy), top=5)
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION hypopg")
    hypothetical = await analyze(settings_for(copy, watched_queries=watched), top=5)
    assert [r["costing"] for r in hypothetical.recommendations] == ["hypopg"] * len(
        hypothetical.recommendations)
    assert recommended(built) == recommended(hypothetical) != []


async def test_a_what_if_that_fails_saves_nothing_and_the_costing_goes_on(database: str) -> None:
    """A candidate set that cannot be built (here: a column the copy lacks) is counted as
    saving nothing; the others are still costed."""
    async with await psycopg.AsyncConnection.connect(database, row_factory=dict_row,
                                                     autocommit=True) as conn:
        await conn.execute("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 5000) g")
        await conn.execute("ANALYZE t")
        statement = Statement(Workload("w", 100.0, frozenset({"public.t"})), "by a",
                              "SELECT * FROM t WHERE a = $1", [["5"]], ["given"], None, {},
                              None)
        costs = WhatIfCosts(Planner(conn, 5000, "built"), [statement])
        await costs.baselines([])
        missing = Candidate("public", "t", ("no_such_column",))
        assert await costs.relative(statement.workload, (missing,)) == 1.0
        assert costs.failed == 1
        assert await costs.relative(statement.workload, (Candidate("public", "t", ("a",)),)) \
            < 0.5
        indexes = await (await conn.execute(
            "SELECT count(*) AS n FROM pg_index WHERE indrelid = 't'::regclass")).fetchone()
        assert indexes == {"n": 0}  # every build was rolled back
