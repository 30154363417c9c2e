"""Index sizes as PostgreSQL builds them: the advisor's estimate (`btree.size`) against the
real index, deduplication included, where HypoPG's estimate is several times too large."""

from __future__ import annotations

import functools
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from bot.advisor import btree, pages, whatif
from bot.advisor.model import Candidate
from bot.advisor.pipeline import analyze
from bot.advisor.recommend import WhatIfCosts
from bot.analysis.plan import Planner
from tests.harness import advised, offers_hypopg, requires_hypopg, watched_file

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
        # flushed at commit: a VACUUM marks no page all-visible before the commit that wrote
        # it is flushed (the test cluster commits asynchronously), and index-only scans need it
        conn.execute("SET synchronous_commit = on")
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


# what each statement reads with an index of each shape: a count over a status (index-only),
# a count since a time (index-only), a status's first rows in time order (stops at the LIMIT)
COSTED = [
    (("status",), "SELECT count(*) FROM t WHERE status = 'pending'"),
    (("status", "created_at"), "SELECT count(*) FROM t WHERE status = 'pending'"),
    (("created_at",), "SELECT count(*) FROM t WHERE created_at >= '2024-12-25'"),
    (("status", "created_at"),
     "SELECT id FROM t WHERE status = 'closed' ORDER BY created_at LIMIT 20"),
]


@requires_hypopg
async def test_what_if_costs_are_those_of_the_index_postgresql_builds(sized: str) -> None:
    """A plan on a hypothetical index, credited the pages HypoPG pads it with
    (`pages.credit`), costs what the planner says once the index is built; uncredited, the
    deduplicated status index costs far more than it will (HypoPG gives it a wide index's
    pages), so it seemed no better for a count than an index that also holds the time."""
    async with await psycopg.AsyncConnection.connect(sized, autocommit=True,
                                                     row_factory=dict_row) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        await conn.execute("VACUUM ANALYZE t")  # all-visible: the counts are index-only
        known = (await btree.columns(conn, [("public", "t")]))["public.t"]
        [rows] = await (await conn.execute("SELECT reltuples FROM pg_class "
                                           "WHERE oid = 't'::regclass")).fetchall()
        planner = Planner(conn, 5000)
        costs = WhatIfCosts(planner, [])
        await costs.baselines([])
        for key, text in COSTED:
            candidate = Candidate("public", "t", key)
            [hypothetical] = await (await conn.execute(
                "SELECT hypopg_relation_size(indexrelid) AS size "
                "FROM hypopg_create_index(%s)", (candidate.create_sql(),))).fetchall()
            await conn.execute("SELECT hypopg_reset()")
            model = btree.size(candidate, rows["reltuples"], known)
            assert model is not None
            padding = pages.Padding(candidate, (hypothetical["size"] - model) / pages.PAGE,
                                    rows["reltuples"])
            [padded, _] = await whatif.estimate(planner, text, [[]], app=None,
                                                hypothetical=[candidate.create_sql()])
            [credited, _] = await whatif.estimate(
                planner, text, [[]], app=None, hypothetical=[candidate.create_sql()],
                credit=functools.partial(pages.credit, paddings=[padding],
                                         random_page_cost=costs.random_page_cost))
            await conn.execute(candidate.create_sql(named=True))
            [plan] = await (await conn.execute("EXPLAIN (FORMAT JSON) " + text)).fetchall()
            await conn.execute(f"DROP INDEX {candidate.name}")
            built = plan["QUERY PLAN"][0]["Plan"]["Total Cost"]
            assert 0.9 * built <= credited <= 1.1 * built, (key, text, credited, built, padded)
            if key == ("status",):
                assert padded > 1.3 * built, (padded, built)


def _scan(index: str, rows: float, cost: float = 100.0, **extra: object) -> dict[str, object]:
    return {"Node Type": "Index Only Scan", "Index Name": index, "Plan Rows": rows,
            "Total Cost": cost, **extra}


def test_credit_finds_each_hypothetical_index_by_the_name_hypopg_gives_it() -> None:
    status = pages.Padding(Candidate("public", "t", ("status",)), 100.0, 10_000)
    covering = pages.Padding(Candidate("app", "t", ("created_at DESC",), None, ("id",)), 40.0,
                             10_000)
    both = [status, covering]
    assert pages.hypothetical_name(covering.candidate) == "btree_app_t_created_at_id"
    # a fifth of the index read, a hundred excess pages at random_page_cost 4
    assert pages.credit({"Plan": _scan("<13601>btree_t_status", 2000)}, both, 4.0) == 80.0
    assert pages.credit({"Plan": _scan("<13602>btree_app_t_created_at_id", 1000)},
                        both, 4.0) == 16.0
    # a real index, or a name two indexes of the set could have, is not credited
    assert pages.credit({"Plan": _scan("t_status_idx", 2000)}, both, 4.0) == 0.0
    twin = pages.Padding(Candidate("public", "t", ("status",), "status <> 'x'"), 1.0, 10_000)
    assert pages.credit({"Plan": _scan("<13601>btree_t_status", 2000)}, [status, twin],
                        4.0) == 0.0
    # HypoPG cuts its names at 63 characters
    long = pages.Padding(Candidate("public", "a_rather_long_table_name",
                                   ("first_column", "second_column", "third_column")),
                         10.0, 1000)
    name = ("<13603>" + pages.hypothetical_name(long.candidate))[:63]
    assert pages.credit({"Plan": _scan(name, 1000)}, [long], 1.0) == 10.0


def test_credit_counts_what_the_plan_reads_of_each_scan() -> None:
    status = pages.Padding(Candidate("public", "t", ("status",)), 100.0, 10_000)
    scan = _scan("<1>btree_t_status", 10_000)
    limit = {"Node Type": "Limit", "Plan Rows": 100, "Total Cost": 5.0, "Plans": [scan]}
    assert pages.credit({"Plan": limit}, [status], 1.0) == 1.0  # a hundredth of it is read
    sort = {"Node Type": "Sort", "Plan Rows": 10_000, "Total Cost": 900.0, "Plans": [scan]}
    limited_sort = {**limit, "Total Cost": 900.0, "Plans": [sort]}
    assert pages.credit({"Plan": limited_sort}, [status], 1.0) == 100.0  # a sort reads it all
    inner = {**_scan("<1>btree_t_status", 10), "Parent Relationship": "Inner"}
    outer = {"Node Type": "Seq Scan", "Plan Rows": 50, "Parent Relationship": "Outer",
             "Total Cost": 10.0}
    loop = {"Node Type": "Nested Loop", "Plan Rows": 500, "Total Cost": 400.0,
            "Plans": [outer, inner]}
    assert pages.credit({"Plan": loop}, [status], 1.0) == 0.0  # one scan per outer row
    hash_join = {"Node Type": "Hash Join", "Plan Rows": 500, "Total Cost": 400.0, "Plans": [
        outer, {"Node Type": "Hash", "Parent Relationship": "Inner", "Plan Rows": 10_000,
                "Total Cost": 150.0, "Plans": [scan]}]}
    assert pages.credit({"Plan": hash_join}, [status], 1.0) == 100.0  # built once, all of it
    # never more than the plan costs
    assert pages.credit({"Plan": {**scan, "Total Cost": 30.0}}, [status], 1.0) == 30.0
