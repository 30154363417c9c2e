"""The analysis on ground it was not built on: extensions in a schema of their own (as
Supabase installs them), a statement wider than any index can be, a statement that cannot be
costed. One statement never sinks the others."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bot import pgcluster
from bot.advisor import candidates as cands
from bot.advisor.pipeline import analyze
from bot.catalog import Table
from bot.reports import snapshots
from bot.server import upgrade_state
from tests.harness import advised, drop, watched_file

ROWS = 20_000
WIDE = 40  # columns of the wide table: more than an index may hold (32)


@pytest.fixture
def elsewhere(pg: pgcluster.Cluster) -> Iterator[str]:
    """A database whose extensions (those the server offers) live in schema `extensions`,
    outside the search_path."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extensions")
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        for extension in ("pg_stat_statements", "hypopg", "amcheck"):
            if extension in available:
                conn.execute(f"CREATE EXTENSION {extension} WITH SCHEMA extensions")
        conn.execute(f"CREATE TABLE orders AS SELECT g AS id, g % 500 AS customer_id, "
                     f"now() - g * interval '1 minute' AS placed_at "
                     f"FROM generate_series(1, {ROWS}) AS g")
        columns = ", ".join(f"g % {n + 2} AS c{n}" for n in range(WIDE))
        conn.execute(f"CREATE TABLE wide AS SELECT {columns} FROM generate_series(1, {ROWS}) g")
        conn.execute(f"CREATE TABLE shapes AS SELECT g AS id, box(point(g, g), point(0, 0)) "
                     f"AS area FROM generate_series(1, {ROWS}) AS g")
        conn.execute("ANALYZE")
        assert conn.execute("SELECT to_regprocedure('hypopg_reset()')").fetchone() == (None,)
    try:
        yield url
    finally:
        drop(pg, name)


def test_candidates_never_exceed_an_index_s_columns() -> None:
    table = Table(1, "public", "wide", 20_000, columns=[f"c{n}" for n in range(WIDE)])
    preds = cands.predicates(
        "SELECT * FROM wide WHERE " + " AND ".join(f"c{n} = {n}" for n in range(WIDE)),
        {"wide": table})["wide"]
    found = cands.for_table(preds, table, {}, {f"c{n}": 4 for n in range(WIDE)})
    assert found and all(len(c.columns) + len(c.include) <= 32 for c in found)


async def test_extensions_outside_the_search_path_and_a_wide_statement(
        elsewhere: str, tmp_path: Path) -> None:
    everything = " AND ".join(f"c{n} = 1" for n in range(33))
    watched = watched_file(tmp_path, [
        {"name": "latest orders", "calls": 500,
         "sql": "SELECT * FROM orders WHERE customer_id = 42 ORDER BY placed_at DESC LIMIT 10"},
        {"name": "thirty-three columns", "calls": 50,
         "sql": f"SELECT * FROM wide WHERE {everything}"},
        {"name": "a box", "calls": 50,  # `=` but no B-tree operator class: not indexable
         "sql": "SELECT * FROM shapes WHERE area = box(point(7, 7), point(0, 0))"}])
    settings = advised(elsewhere, watched_queries=watched)
    result = await analyze(settings, top=5)
    planned = {r.statement.name: r for r in result.results}
    assert set(planned) >= {"latest orders", "thirty-three columns", "a box"}
    mine = ("latest orders", "thirty-three columns", "a box")
    assert all(planned[n].error is None for n in mine), [planned[n].error for n in mine]
    assert any(r["table"] == "public.orders" and r["columns"][0] == "customer_id"
               for r in result.recommendations), (result.recommendations, result.notes)
    assert not any("hypopg" in n and "does not exist" in n for n in result.notes)
    assert any(n.startswith("candidate idx_shapes_area cannot be costed: data type box has no "
                            "default operator class") for n in result.notes), result.notes
    # pg_stat_statements in its own schema: read for the report's snapshots too
    await upgrade_state(settings)
    assert await snapshots.take(settings) is not None
