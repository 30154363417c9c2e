"""Index advice without HypoPG: candidates costed by building them for real on a scratch copy,
inside transactions rolled back at once, never on the target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot import pgcluster
from bot.advisor.pipeline import analyze
from bot.advisor.recommend import BUILT_NOTE, HYPOPG_HINT
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
