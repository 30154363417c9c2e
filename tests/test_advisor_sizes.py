"""Index sizes as PostgreSQL builds them: the advisor's estimate (`btree.size`) against the
real index, deduplication included, where HypoPG's estimate is several times too large."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from bot.advisor import btree
from bot.advisor.model import Candidate
from bot.advisor.pipeline import analyze
from tests.harness import advised, offers_hypopg, watched_file

ROWS = 30_000

SHAPES = [
    (("status",), ()),  # four values: one entry per value and page, 6 bytes a row
    (("parent_id",), ()),  # a skewed foreign key
    (("created_at",), ()),  # unique timestamps: nothing to deduplicate
    (("amount",), ()),  # numeric cannot deduplicate
    (("code",), ()),  # a 33-byte text
    (("status", "created_at"), ()),
    (("status", "parent_id"), ()),
    (("status",), ("id",)),  # INCLUDE: never deduplicated
    (("flag",), ()),
    (("created_at DESC",), ("id", "amount")),
]


@pytest.fixture
def sized(database: str) -> str:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t AS SELECT g AS id, (ARRAY['active', 'pending', 'closed', 'failed'])"
            "[1 + floor(4 * random() ^ 3)::int] AS status, "
            "1 + floor(2000 * random() ^ 3)::int AS parent_id, "
            "timestamptz '2025-01-01' - g * interval '1 minute' AS created_at, "
            "round((random() * 1000)::numeric, 2) AS amount, md5(g::text) AS code, "
            f"random() < 0.5 AS flag FROM generate_series(1, {ROWS}) g")
        conn.execute("ANALYZE t")
    return database


async def test_sizes_match_the_built_index_where_hypopg_overstates_them(sized: str) -> None:
    async with await psycopg.AsyncConnection.connect(sized, row_factory=dict_row) as aconn:
        known = (await btree.columns(aconn, [("public", "t")]))["public.t"]
    assert known["status"].equalimage and not known["amount"].equalimage
    sizes: dict[Candidate, int] = {}
    with psycopg.connect(sized, autocommit=True) as conn:
        for key, include in SHAPES:
            candidate = Candidate("public", "t", key, None, include)
            conn.execute(candidate.create_sql(named=True))
            [(real,)] = conn.execute("SELECT pg_relation_size(%s::regclass)",
                                     (candidate.name,)).fetchall()
            conn.execute(f"DROP INDEX {candidate.name}")
            estimate = btree.size(candidate, ROWS, known)
            assert estimate is not None
            # never much smaller than the real index, and at most a quarter larger (several
            # columns' duplicates are taken as independent, so seen as fewer)
            assert 0.9 * real <= estimate <= 1.3 * real, (candidate.name, estimate, real)
            sizes[candidate] = real
        if offers_hypopg(sized):  # what the estimate replaces
            conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
            status = Candidate("public", "t", ("status",))
            [(hypothetical,)] = conn.execute(
                "SELECT hypopg_relation_size(indexrelid) FROM hypopg_create_index(%s)",
                (status.create_sql(),)).fetchall()
            assert hypothetical > 3 * sizes[status]


def test_unknown_rows_columns_and_partial_indexes_are_left_to_hypopg() -> None:
    column = btree.Column(4, "i", 4, -1.0, True)
    assert btree.size(Candidate("public", "t", ("a",)), 1000, {}) is None
    assert btree.size(Candidate("public", "t", ("a",)), -1, {"a": column}) is None  # never analysed
    assert btree.size(Candidate("public", "t", ("a",), "a > 0"), 1000, {"a": column}) is None
    assert btree.size(Candidate("public", "t", ("a",)), 1000, {"a": column}) is not None


async def test_a_recommendation_states_the_size_the_index_is_built_at(sized: str,
                                                                        tmp_path: Path) -> None:
    """The size on a recommendation (and so on its card, and against the budget) is the
    built index's, not HypoPG's several times larger estimate."""
    watched = watched_file(tmp_path, [{"name": "a parent's count", "calls": 500,
                                       "sql": "SELECT count(*) FROM t WHERE parent_id = 1500"}])
    analysis = await analyze(advised(sized, watched_queries=watched), top=5)
    [rec] = analysis.recommendations
    assert (rec["columns"], rec["where"], rec["include"]) == (["parent_id"], None, [])
    assert rec["size_bytes"] is not None
    with psycopg.connect(sized, autocommit=True) as conn:
        conn.execute("CREATE INDEX built ON t (parent_id)")
        [(real,)] = conn.execute("SELECT pg_relation_size('built')").fetchall()
    assert 0.9 * real <= rec["size_bytes"] <= 1.3 * real, (rec["size_bytes"], real)
