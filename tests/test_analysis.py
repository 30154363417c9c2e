"""`analyze` end to end on the HotDash sample: the workload sent through the extended protocol,
pg_stat_statements read, statements planned with real values as the owner and as the
application, the results rendered; and the ways a request or a target can be wrong."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bot import pgcluster, sqltext
from bot.advisor import pipeline
from bot.advisor.pipeline import BadRequest, analyze
from bot.analysis import collect
from bot.analysis.collect import WatchedQueriesError
from bot.analysis.model import Analysis, Finding, PlanRun, QueryResult, Statement
from bot.analysis.plan import Planner
from bot.catalog import MARK, TAG
from bot.db import DatabaseUnavailable
from bot.dsn import redact_dsn
from bot.render import analysis as render
from bot.sample import hotdash as sample
from tests.harness import clone, drop, settings_for, watched_file

HOTDATA = Path(sys.executable).parent / "hotdata"
SEED = 7
SCALE_WEIGHTS = 0.1  # 129 statements: well under a second on the 0.1-scale sample
TILES = {sqltext.identity(tile.sql): tile for tile in sample.TILES}
COUNT_TILE = next(t for t in sample.TILES if t.name == "notifications_unread_count")
WEEK_TILE = next(t for t in sample.TILES if t.name == "inventory_week_totals")
LATEST_TILE = next(t for t in sample.TILES if t.name == "notifications_unread_latest")

RESET_SQL = ("SELECT pg_stat_statements_reset(0, "
             "(SELECT oid FROM pg_database WHERE datname = current_database()), 0)")
PGSS_SQL = ("SELECT query, calls, total_exec_time FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())")


def run_workload(url: str) -> None:
    """The HotDash read mix (fixed seed), extended protocol, into an emptied pg_stat_statements
    (the ids the plan draws from are read before the reset)."""
    with psycopg.connect(url, autocommit=True) as conn:
        plan = sample.workload_plan(conn, seed=SEED, scale_weights=SCALE_WEIGHTS)
        conn.execute(RESET_SQL)
        sample.run(conn, plan)


def scalar(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def tile_totals(url: str) -> list[tuple[str, int, float]]:
    """(identity, calls, total ms) of the workload's statements as pg_stat_statements holds
    them, heaviest first: what the analysis should report."""
    totals: dict[str, list[float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for query, calls, total in conn.execute(PGSS_SQL):
            key = sqltext.identity(query)
            if key in TILES:
                entry = totals.setdefault(key, [0, 0.0])
                entry[0] += calls
                entry[1] += total
    return sorted(((k, int(c), t) for k, (c, t) in totals.items()), key=lambda e: -e[2])


def by_name(analysis: Analysis) -> dict[str, QueryResult]:
    return {r.statement.name: r for r in analysis.results if r.statement.name}


def by_identity(analysis: Analysis) -> dict[str, QueryResult]:
    return {r.statement.identity: r for r in analysis.results}


def find(analysis: Analysis, text: str) -> QueryResult:
    return by_identity(analysis)[sqltext.identity(text)]


@pytest.fixture(scope="module")
def worked(pg: pgcluster.Cluster, hotdash_template: str) -> Iterator[str]:
    """URL of a HotDash copy on which the read mix has run, shared by the read-only tests."""
    name = clone(pg, hotdash_template)
    try:
        url = pg.url(name)
        run_workload(url)
        yield url
    finally:
        drop(pg, name)


# --- collection and ranking -------------------------------------------------------------------


async def test_slowest_statements_ranked_without_the_bots_own_or_utility_statements(
        hotdash: str) -> None:
    dbname = hotdash.rsplit("/", 1)[1]
    with psycopg.connect(hotdash, autocommit=True) as conn:
        # Nested statements are recorded too from now on: the bot's own EXPLAIN ANALYZE runs
        # show up in pg_stat_statements, and must still not be mistaken for the application's.
        conn.execute(sql.SQL("ALTER DATABASE {} SET pg_stat_statements.track = 'all'").format(
            sql.Identifier(dbname)))
    run_workload(hotdash)
    with psycopg.connect(hotdash, autocommit=True) as conn:
        # utility and catalog statements of our own, which are not the application's
        conn.execute("SET work_mem = '8MB'")
        conn.execute("VACUUM (ANALYZE) products")
        conn.execute("ANALYZE profiles")
        conn.execute("SELECT relname FROM pg_class WHERE relkind = %s", ("r",)).fetchall()
        conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
    expected = tile_totals(hotdash)
    assert len(expected) == len(sample.TILES)  # every tile ran

    first = await analyze(settings_for(hotdash))
    assert len(first.results) == 5  # the default top
    assert [r.statement.identity for r in first.results] == [e[0] for e in expected[:5]]
    totals = [r.statement.total_ms for r in first.results]
    assert totals == sorted(totals, reverse=True)
    for result, (_, calls, total) in zip(first.results, expected, strict=False):
        s = result.statement
        assert s.source == "pg_stat_statements"
        assert s.queryid
        assert s.calls == calls
        assert s.total_ms == pytest.approx(total)
        assert s.mean_ms == pytest.approx(total / calls)

    # The second analysis sees the first one's EXPLAIN/PREPARE/SET/catalog statements in
    # pg_stat_statements, and lists none of them: exactly the workload's statements remain.
    second = await analyze(settings_for(hotdash), top=50)
    assert [r.statement.identity for r in second.results] == [e[0] for e in expected]
    for result in second.results:
        text = result.statement.query.lstrip().upper()
        assert not text.startswith(("EXPLAIN", "PREPARE", "SET", "VACUUM", "ANALYZE", "/*"))
        assert "hotdata" not in result.statement.query
        assert "pg_" not in result.statement.query
    # nor did its EXPLAIN ANALYZE runs count as calls of the application's statements
    calls = {r.statement.identity: r.statement.calls for r in second.results}
    assert calls == {key: count for key, count, _ in expected}

    third = await analyze(settings_for(hotdash), top=3)
    assert [r.statement.identity for r in third.results] == [e[0] for e in expected[:3]]


def test_hotdatas_mark_stays_in_the_texts_pg_stat_statements_records(database: str) -> None:
    # PostgreSQL 18 records a statement from its first token on, dropping a leading comment:
    # the mark goes after the first keyword.
    assert TAG + "SELECT 1" == "SELECT /* hotdata */ 1"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(RESET_SQL)
        conn.execute(TAG + "SELECT count(*) FROM pg_class WHERE relkind = 'r'").fetchall()
        conn.execute(TAG + "\nSELECT nspname FROM pg_namespace").fetchall()
        recorded = [query for query, _, _ in conn.execute(PGSS_SQL)
                    if "pg_class" in query or "pg_namespace" in query]
    assert len(recorded) == 2 and all(MARK in query for query in recorded), recorded


# pg_stat_statements' I/O timing columns, as each version names them (renamed in 17, temporary
# blocks' added in 15): the test's own reading, to check hotdata's (bot.catalog.pgss_io_ms).
IO_COLUMNS = {17: [f"{kind}_blk_{way}_time" for kind in ("shared", "local", "temp")
                   for way in ("read", "write")],
              15: ["blk_read_time", "blk_write_time", "temp_blk_read_time",
                   "temp_blk_write_time"]}
SPILLING = "SELECT t FROM spill ORDER BY t"


async def test_io_time_is_read_from_the_columns_of_the_servers_version(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE spill AS "
                     "SELECT i, md5(i::text) AS t FROM generate_series(1, 50000) AS i")
        conn.execute(RESET_SQL)
        # timed I/O: a sort too large for work_mem writes and reads temporary files
        conn.execute("SET track_io_timing = on")
        conn.execute("SET work_mem = '64kB'")
        for _ in range(3):
            conn.execute(SPILLING).fetchall()
        major = conn.info.server_version // 10000
        columns = IO_COLUMNS[17 if major >= 17 else 15]
        expected = conn.execute(sql.SQL(
            "SELECT sum({}) FROM pg_stat_statements WHERE query = %s AND dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())").format(
            sql.SQL(" + ").join(sql.Identifier(c) for c in columns)), (SPILLING,)).fetchone()
    assert expected is not None and expected[0] > 0  # the sort's temporary files, timed

    analysis = await analyze(settings_for(database))
    [spilled] = [r.statement for r in analysis.results if r.statement.query == SPILLING]
    assert spilled.calls == 3
    assert spilled.io_ms == pytest.approx(expected[0])


async def test_a_statement_whose_texts_add_up_outranks_a_heavier_single_text(
        database: str) -> None:
    # Two IN-lists of different lengths are two pg_stat_statements entries but one statement
    # (one fingerprint, one table): each lighter than `counted`, together heavier. Only the
    # lightest, never-analysed tail may be skipped, not a part of a heavier statement.
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE ranked (a int)")
        conn.execute("INSERT INTO ranked VALUES (1)")
        conn.execute(RESET_SQL)
        for _ in range(4):
            conn.execute("SELECT pg_sleep(0.01) FROM ranked WHERE a IN (1, 2)").fetchall()
            conn.execute("SELECT pg_sleep(0.01) FROM ranked WHERE a IN (1, 2, 3)").fetchall()
            conn.execute("SELECT count(*), pg_sleep(0.015) FROM ranked").fetchall()
    async with await psycopg.AsyncConnection.connect(database, autocommit=True,
                                                     row_factory=dict_row) as conn:
        first = await collect.pg_stat_statements(conn, 1, [])
        both = await collect.pg_stat_statements(conn, 2, [])
    assert [s.calls for s in first] == [8]
    assert "IN" in first[0].query
    assert first[0].total_ms > 75
    assert [s.calls for s in both] == [8, 4]
    assert [s.identity for s in both][:1] == [first[0].identity]


async def test_parameterised_statements_are_planned_with_values_from_pg_stats(
        worked: str) -> None:
    analysis = await analyze(settings_for(worked), top=50)
    # the only notes are the advisor's (skipped candidates, estimates): nothing went missing
    assert not [n for n in analysis.notes if "pg_stat_statements" in n or "hidden" in n]
    for result in analysis.results:
        assert result.error is None, (result.statement.query, result.error)
        assert result.runs
        for run in result.runs:
            assert run.role == "owner"  # no application role configured
            assert run.error is None, run.error
            assert run.plan is not None
            assert run.analyzed is True
            assert run.ms is not None and run.ms > 0
        assert result.plan_summary and result.plan_summary != "no plan"

    count = find(analysis, COUNT_TILE.sql)
    assert "$1" in count.statement.query and "$2" in count.statement.query
    runs = {run.label: run for run in count.runs}
    assert set(runs) == {"common", "median", "rare"}
    # The test's own reads are tagged as hotdata's: on a shared database they must not rank
    # among the workload's statements that later tests expect at the top.
    heaviest = scalar(worked, TAG + "SELECT user_id::text FROM notifications "
                              "GROUP BY user_id ORDER BY count(*) DESC LIMIT 1")
    assert heaviest == str(uuid.UUID(hex=hashlib.md5(b"u0").hexdigest()))  # user 0
    assert runs["common"].values[0] == heaviest
    with psycopg.connect(worked, autocommit=True) as conn:
        row = conn.execute(
            TAG + "SELECT most_common_vals::text::text[], histogram_bounds::text::text[] "
            "FROM pg_stats WHERE tablename = 'notifications' AND attname = 'user_id'"
        ).fetchone()
        assert row is not None
        known = set(row[0] or []) | set(row[1] or [])
        per_user = dict(conn.execute(
            TAG + "SELECT user_id::text, count(*) FROM notifications GROUP BY user_id").fetchall())
        read = conn.execute(
            TAG + "SELECT most_common_vals::text::text[] FROM pg_stats "
            "WHERE tablename = 'notifications' AND attname = 'read'").fetchone()
    for label in ("median", "rare"):
        assert runs[label].values[0] in known
        assert per_user[runs[label].values[0]] < per_user[heaviest]
    assert read is not None and runs["common"].values[1] == read[0][0] == "t"

    # LIMIT $3 gets the rows its calls return (at most the dashboard's page of 20), not a
    # column statistic
    latest = find(analysis, LATEST_TILE.sql)
    returned = round(latest.statement.rows / latest.statement.calls)
    assert 1 <= returned <= 20
    assert {run.values[2] for run in latest.runs} == {str(returned)}
    assert any(f"LIMIT $3 planned with {returned}" in note for note in latest.notes)

    # `interval '7 days'` arrived as `interval $1`, which PostgreSQL cannot PREPARE as written
    week = find(analysis, WEEK_TILE.sql)
    assert "interval $1" in week.statement.query
    assert week.error is None
    assert [run.values for run in week.runs] == [["7 days"]]
    assert week.runs[0].plan is not None and week.runs[0].ms is not None


async def test_one_statement_run_by_two_roles_and_a_literal_watched_query_merge(
        hotdash: str, tmp_path: Path) -> None:
    products = "SELECT count(*) FROM products WHERE id < %s"
    prefs = "SELECT theme, prefs FROM user_preferences WHERE user_id = %s"
    user = scalar(hotdash, "SELECT id FROM profiles WHERE n = 3")
    with psycopg.connect(hotdash, autocommit=True) as conn:
        conn.execute(RESET_SQL)
        for value in (5, 10, 15):
            conn.execute(products, (value,)).fetchall()
        for _ in range(4):
            conn.execute(prefs, (user,)).fetchall()
        conn.execute("SET ROLE authenticated")
        for value in (20, 25):
            conn.execute(products, (value,)).fetchall()
        conn.execute("RESET ROLE")
        rows = conn.execute(
            "SELECT userid::regrole::text, calls, total_exec_time FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query = 'SELECT count(*) FROM products WHERE id < $1' ORDER BY 1").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("authenticated", 2), ("postgres", 3)]

    literal = f"SELECT theme, prefs FROM user_preferences WHERE user_id = '{user}'"
    watched = watched_file(tmp_path, [{"name": "my preferences", "sql": literal}])
    analysis = await analyze(settings_for(hotdash, watched_queries=watched), top=50)

    counted = [r for r in analysis.results
               if r.statement.identity == sqltext.identity(products % "1")]
    assert len(counted) == 1
    assert counted[0].statement.calls == 5
    assert counted[0].statement.total_ms == pytest.approx(sum(r[2] for r in rows))

    merged = [r for r in analysis.results
              if r.statement.identity == sqltext.identity(literal)]
    assert len(merged) == 1
    statement = merged[0].statement
    assert statement.name == "my preferences"
    assert statement.source == "pg_stat_statements"
    assert statement.calls == 4
    assert statement.queryid
    assert merged[0].error is None
    assert merged[0].runs and all(run.plan is not None for run in merged[0].runs)


# --- planning as the application --------------------------------------------------------------


async def test_rls_plans_differ_for_the_application_role(hotdash: str, tmp_path: Path) -> None:
    heavy = scalar(hotdash, "SELECT user_id::text FROM notifications "
                            "GROUP BY user_id ORDER BY count(*) DESC LIMIT 1")
    watched = watched_file(tmp_path, [
        {"name": "unread", "sql": "SELECT count(*) FROM notifications WHERE read = false"},
        {"name": "restocks", "sql": "SELECT count(*) FROM inventory_actions "
                                    "WHERE action = 'restock'"},
    ])
    config = settings_for(hotdash, watched_queries=watched, app_role="authenticated",
                          app_jwt_claims=json.dumps({"sub": heavy, "role": "authenticated"}))

    # Without an index both see a Seq Scan: the same plan.
    before = by_name(await analyze(config))
    assert before["unread"].app_plan_differs is False
    assert [r.role for r in before["unread"].runs] == ["owner", "app"]

    with psycopg.connect(hotdash, autocommit=True) as conn:
        conn.execute("CREATE INDEX notifications_user_id_idx ON notifications (user_id)")
        conn.execute("ANALYZE notifications")
    results = by_name(await analyze(config))

    unread = results["unread"]
    assert unread.error is None
    owner = [r for r in unread.runs if r.role == "owner"]
    app = [r for r in unread.runs if r.role == "app"]
    assert owner and app
    assert all(r.plan is not None and r.analyzed and r.error is None for r in app)
    assert unread.app_plan_differs is True
    assert "Seq Scan on public.notifications" in unread.plan_summary
    assert "notifications_user_id_idx" not in unread.plan_summary
    assert unread.app_plan_summary is not None
    assert "notifications_user_id_idx" in unread.app_plan_summary
    # the app saw only the heavy user's unread rows, the owner every unread row
    assert _counted(app[0]) < _counted(owner[0])
    assert _counted(app[0]) == scalar(
        hotdash, "SELECT count(*) FROM notifications WHERE NOT read AND user_id = %s", (heavy,))

    restocks = results["restocks"]
    assert restocks.error is None
    assert restocks.runs and all(r.role == "owner" for r in restocks.runs)
    assert restocks.app_plan_differs is False
    assert restocks.app_plan_summary is None


def _counted(run: PlanRun) -> int:
    """Rows the scan under count(*) returned."""
    assert run.plan is not None
    node = run.plan["Plan"]
    while node.get("Node Type") in ("Aggregate", "Gather", "Finalize Aggregate",
                                    "Partial Aggregate") and node.get("Plans"):
        node = node["Plans"][0]
    return round(node["Actual Rows"] * node.get("Actual Loops", 1))


# --- planning on several connections ---------------------------------------------------------


def analysis_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE application_name = 'hotdata-analysis'").fetchone()
    return row[0] if row else -1


async def test_statements_planned_at_once_keep_their_order_and_their_own_errors(
        hotdash: str, tmp_path: Path) -> None:
    # The first statement is the slowest, so the ones behind it finish first on the other
    # connections; one cannot be planned and one does not finish in time: each keeps its place
    # and its own outcome.
    queries = [
        {"name": "slow", "sql": "SELECT count(*) FROM generate_series(1, 2000000) AS g"},
        {"name": "unread", "sql": "SELECT count(*) FROM notifications WHERE read = false"},
        {"name": "missing table", "sql": "SELECT * FROM no_such_table WHERE id = 1"},
        {"name": "pending", "sql": "SELECT count(*) FROM decision_log WHERE status = 'pending'"},
        {"name": "never ends", "sql": "SELECT sum(g) FROM generate_series(1, 2000000000) AS g"},
        {"name": "latest", "sql": "SELECT * FROM notifications ORDER BY created_at DESC LIMIT 5"},
        {"name": "profiles", "sql": "SELECT count(*) FROM profiles"},
    ]
    steps: list[str] = []
    connections: list[int] = []

    async def progress(step: str) -> None:
        steps.append(step)
        if step.startswith("planning"):
            connections.append(analysis_connections(hotdash))

    for _ in range(50):  # backends of earlier tests' analyses may still be exiting
        if analysis_connections(hotdash) == 0:
            break
        time.sleep(0.1)

    analysis = await analyze(settings_for(hotdash, watched_queries=watched_file(tmp_path, queries),
                                          statement_timeout_ms=3000),
                             top=5, progress=progress)

    assert [r.statement.name for r in analysis.results] == [q["name"] for q in queries]
    results = by_name(analysis)
    missing = results.pop("missing table")
    assert missing.error is not None and missing.error.startswith("could not be planned")
    assert "no_such_table" in missing.error
    never = results.pop("never ends")
    assert never.error is None
    assert [r.error for r in never.runs] == ["did not finish in 3 s"]
    assert [f.kind for f in never.findings] == ["timeout"]
    for name, result in results.items():
        assert result.error is None, (name, result.error)
        assert result.runs and all(r.plan is not None and r.ms is not None for r in result.runs)

    planning = [s for s in steps if s.startswith("planning")]
    assert planning == [f"planning {n}/{len(queries)}…" for n in range(1, len(queries) + 1)]
    assert max(connections) == pipeline.PLANNERS  # the statements were shared out
    for _ in range(50):  # every connection is closed afterwards
        if analysis_connections(hotdash) == 0:
            break
        time.sleep(0.1)
    assert analysis_connections(hotdash) == 0


async def test_a_role_allowed_one_connection_gets_the_whole_analysis(
        pg: pgcluster.Cluster, hotdash: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.advisor.pipeline")
    role = f"single_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'one-at-a-time' CONNECTION LIMIT 1 "
                             "IN ROLE pg_read_all_data, pg_read_all_stats").format(
            sql.Identifier(role)))
    try:
        watched = watched_file(tmp_path, [
            {"name": "unread", "sql": "SELECT count(*) FROM notifications WHERE read = false"},
            {"name": "pending",
             "sql": "SELECT count(*) FROM decision_log WHERE status = 'pending'"},
            {"name": "missing table", "sql": "SELECT * FROM no_such_table WHERE id = 1"},
        ])
        url = pg.url(hotdash.rsplit("/", 1)[1], user=role, password="one-at-a-time")
        analysis = await analyze(settings_for(url, watched_queries=watched))
        results = by_name(analysis)
        assert "planning on fewer connections" in caplog.text
        assert "one-at-a-time" not in caplog.text
        assert [r.statement.name for r in analysis.results] == ["unread", "pending",
                                                               "missing table"]
        assert results["missing table"].error is not None
        for name in ("unread", "pending"):
            assert results[name].error is None
            assert results[name].runs[0].plan is not None
        with psycopg.connect(hotdash, autocommit=True) as conn:  # the snapshot was taken too
            conn.execute("CREATE INDEX twice_a ON decision_log (status)")
            conn.execute("CREATE INDEX twice_b ON decision_log (status)")
        again = await analyze(settings_for(url, watched_queries=watched))
        assert {c["index"] for c in again.cleanup} & {"twice_a", "twice_b"}
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_the_planners_prepared_statement_survives_psycopg_housekeeping(
        hotdash: str) -> None:
    # psycopg prepares a query it has run five times, and from then on answers a new statement
    # that rolls back (or drops, or alters) with DEALLOCATE ALL, which would also drop the
    # planner's statement while a caller still uses it.
    text = "SELECT count(*) FROM notifications WHERE read = $1"
    async with await psycopg.AsyncConnection.connect(hotdash, autocommit=True,
                                                     row_factory=dict_row) as conn:
        planner = Planner(conn, 5000)
        for _ in range(8):
            assert await planner.parameter_types(text) == ["boolean"]
            run = await planner.run(text, ["false"], role="owner", label="common", analyze=True)
            assert run.error is None and run.ms is not None
        name = planner._name()
        async with planner._prepared(name, text, None):
            for n in range(8):
                await conn.execute(f"SAVEPOINT costing_{n}")
                await conn.execute("SET LOCAL enable_seqscan = off")
                assert await planner._explain(name, ["false"], "FORMAT JSON")
                await conn.execute(f"ROLLBACK TO SAVEPOINT costing_{n}")
        cur = await conn.execute("SELECT count(*) AS n FROM pg_prepared_statements")
        assert await cur.fetchone() == {"n": 0}
        cur = await conn.execute("SELECT current_setting('transaction_read_only') AS ro")
        assert await cur.fetchone() == {"ro": "off"}  # every plan's transaction has ended


# --- EXPLAIN ANALYZE safety -------------------------------------------------------------------


async def test_writes_are_estimated_only_and_leave_the_data_unchanged(
        hotdash: str, tmp_path: Path) -> None:
    heavy = scalar(hotdash, "SELECT user_id::text FROM notifications "
                            "GROUP BY user_id ORDER BY count(*) DESC LIMIT 1")
    data_sql = (
        "SELECT (SELECT count(*) FROM notifications), "
        "(SELECT count(*) FROM notifications WHERE read), "
        "(SELECT sum(hashtext(id::text || read::text)) FROM notifications), "
        "(SELECT count(*) FROM decision_log), "
        "(SELECT count(*) FROM decision_log WHERE status = 'pending')")
    with psycopg.connect(hotdash, autocommit=True) as conn:
        before = conn.execute(data_sql).fetchone()
    watched = watched_file(tmp_path, [
        {"name": "mark read",
         "sql": f"UPDATE notifications SET read = true WHERE user_id = '{heavy}'"},
        {"name": "purge", "sql": f"DELETE FROM notifications WHERE user_id = '{heavy}'"},
        {"name": "cte", "sql": "WITH gone AS (DELETE FROM decision_log "
                               "WHERE status = 'pending' RETURNING id) "
                               "SELECT count(*) FROM gone"},
        {"name": "lock", "sql": "SELECT * FROM decision_log WHERE status = 'pending' "
                                "FOR UPDATE"},
        {"name": "read", "sql": "SELECT count(*) FROM decision_log WHERE status = 'pending'"},
    ])
    results = by_name(await analyze(settings_for(hotdash, watched_queries=watched)))

    for name in ("mark read", "purge", "cte", "lock"):
        result = results[name]
        assert result.error is None, result.error
        assert result.runs
        for run in result.runs:
            assert run.analyzed is False
            assert run.ms is None
            assert run.plan is not None  # a plan, estimated
            assert "Actual Rows" not in run.plan["Plan"]
        assert any("estimated only" in note for note in result.notes), result.notes
    assert results["read"].runs[0].analyzed is True
    assert not results["read"].notes

    with psycopg.connect(hotdash, autocommit=True) as conn:
        after = conn.execute(data_sql).fetchone()
    assert after == before


# --- degraded targets and wrong input -------------------------------------------------------


async def test_without_pg_stat_statements_the_watched_queries_are_still_analysed(
        hotdash: str, tmp_path: Path) -> None:
    run_workload(hotdash)
    with psycopg.connect(hotdash, autocommit=True) as conn:
        conn.execute("DROP EXTENSION pg_stat_statements")
    watched = watched_file(tmp_path, [
        {"name": "unread", "sql": "SELECT count(*) FROM notifications WHERE read = false"},
        {"name": "pending", "sql": "SELECT count(*) FROM decision_log WHERE status = 'pending'"},
    ])
    analysis = await analyze(settings_for(hotdash, watched_queries=watched))
    assert sorted(r.statement.name or "" for r in analysis.results) == ["pending", "unread"]
    assert all(r.statement.source == "watched" for r in analysis.results)
    assert all(r.error is None and r.runs[0].plan is not None for r in analysis.results)
    notes = " ".join(analysis.notes)
    assert "CREATE EXTENSION pg_stat_statements" in notes
    assert "shared_preload_libraries" in notes


async def test_watched_query_errors_are_per_query(hotdash: str, tmp_path: Path) -> None:
    user = scalar(hotdash, "SELECT id::text FROM profiles WHERE n = 0")
    watched = watched_file(tmp_path, [
        {"name": "missing table", "sql": "SELECT * FROM no_such_table WHERE id = 1"},
        {"name": "too many values", "sql": COUNT_TILE.sql, "params": [user, "false"]},
        {"name": "given values", "sql": LATEST_TILE.sql, "params": [user]},
        {"name": "fine", "sql": "SELECT count(*) FROM decision_log WHERE status = 'pending'"},
    ])
    results = by_name(await analyze(settings_for(hotdash, watched_queries=watched)))
    missing = results["missing table"]
    assert missing.error is not None
    assert missing.error.startswith("could not be planned")
    assert "no_such_table" in missing.error

    too_many = results["too many values"]
    assert too_many.error == "the watched query takes 1 parameter(s) but 2 value(s) are given"
    assert too_many.runs == []

    given = results["given values"]
    assert given.error is None
    assert [(run.label, run.values) for run in given.runs] == [("given", [user])]
    assert given.runs[0].plan is not None and given.runs[0].analyzed

    fine = results["fine"]
    assert fine.error is None and fine.runs[0].plan is not None and fine.runs[0].ms is not None


async def test_an_unparseable_watched_query_is_refused_at_load(
        hotdash: str, tmp_path: Path) -> None:
    truncated = "SELECT * FROM notifications WHERE user_id = $1 AND read = $2 ORDER BY"
    watched = watched_file(tmp_path, [
        {"name": "fine", "sql": "SELECT 1"},
        {"name": "cut short", "sql": truncated},
    ])
    with pytest.raises(WatchedQueriesError) as raised:
        await analyze(settings_for(hotdash, watched_queries=watched))
    assert "cut short" in str(raised.value)
    assert "#2" in str(raised.value)
    with pytest.raises(WatchedQueriesError, match="does not exist"):
        await analyze(settings_for(hotdash, watched_queries=tmp_path / "absent.toml"))


@pytest.mark.parametrize("top", [0, -1, 51])
async def test_top_out_of_range_is_a_bad_request(top: int) -> None:
    # nothing listens there: the request is refused before any connection is attempted
    url = f"postgresql://nobody@127.0.0.1:{pgcluster.free_port()}/nowhere"
    with pytest.raises(BadRequest, match="between 1 and 50"):
        await analyze(settings_for(url), top=top)


async def test_an_unreachable_target_is_database_unavailable_without_the_password() -> None:
    secret = "Unreach4ble-S3cret"
    url = f"postgresql://analyst:{secret}@127.0.0.1:{pgcluster.free_port()}/app"
    with pytest.raises(DatabaseUnavailable) as raised:
        await analyze(settings_for(url))
    message = str(raised.value)
    assert redact_dsn(url) in message
    assert secret not in message


async def test_a_wrong_password_is_database_unavailable_without_the_password(
        pg: pgcluster.Cluster, hotdash: str) -> None:
    role = f"analyst_{uuid.uuid4().hex[:8]}"
    dbname = hotdash.rsplit("/", 1)[1]
    wrong = "Wr0ng-Pa55word-zz"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal("the-right-one")))
    try:
        url = pg.url(dbname, user=role, password=wrong)
        with pytest.raises(DatabaseUnavailable) as raised:
            await analyze(settings_for(url))
        message = str(raised.value)
        assert redact_dsn(url) in message
        assert wrong not in message
        assert "password authentication failed" in message
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# --- rendering --------------------------------------------------------------------------------

QUERY_KEYS = {"queryid", "query", "source", "calls", "total_ms", "mean_ms", "plan_summary",
              "findings"}


def check_shape(report: dict[str, Any]) -> None:
    assert {"database", "collected_at", "queries", "recommendations"} <= set(report)
    assert isinstance(report["queries"], list) and isinstance(report["recommendations"], list)
    assert datetime.fromisoformat(report["collected_at"]).tzinfo is not None
    for query in report["queries"]:
        assert set(query) >= QUERY_KEYS, set(query)
        assert query["source"] in ("pg_stat_statements", "watched")
        assert isinstance(query["calls"], int)
        assert isinstance(query["total_ms"], float) and isinstance(query["mean_ms"], float)
        assert isinstance(query["plan_summary"], str)
        for finding in query["findings"]:
            assert {"kind", "table", "detail"} <= set(finding)
            assert finding["table"] is None or finding["table"].count(".") == 1
        generic = query["generic_run"]
        assert generic is None or set(generic) == set(query["runs"][0])


async def test_json_has_the_designed_shape(worked: str) -> None:
    analysis = await analyze(settings_for(worked), top=10)
    report = render.as_dict(analysis)
    check_shape(report)
    assert json.loads(render.as_json(analysis)) == json.loads(json.dumps(report, default=str))
    assert report["database"] == redact_dsn(worked)
    assert len(report["queries"]) == len(analysis.results) >= 9
    assert all(q["queryid"] for q in report["queries"])
    kinds = {f["kind"] for q in report["queries"] for f in q["findings"]}
    assert {"seq_scan", "sort_limit"} <= kinds  # the sample has no index beyond its keys
    # statements with parameters are planned under their generic plan too
    assert any(q["generic_run"] for q in report["queries"])
    tables = {f["table"] for q in report["queries"] for f in q["findings"]}
    assert "public.notifications" in tables


def _long_analysis(count: int = 50) -> Analysis:
    """`count` statements with texts far beyond Slack's limits."""
    results = []
    for n in range(count):
        statement = Statement(
            f"identity {n}",
            query=f"SELECT /* statement {n} */ " + ", ".join(
                f"column_{n}_{i}" for i in range(600)) + f" FROM table_{n}",
            source="pg_stat_statements" if n % 3 else "watched",
            queryid=str(10_000 + n), name=None if n % 2 else f"tile number {n} " + "x" * 400,
            calls=n * 1000, total_ms=n * 1234.5, mean_ms=1.2345)
        result = QueryResult(statement, plan_summary="Seq Scan on public.t " + "→ Sort " * 400)
        if n % 7 == 3:
            result.error = f"could not be planned: relation table_{n} " + "y" * 4000
        else:
            result.runs = [PlanRun("owner", "common", ["v" * 500], plan={"Plan": {}},
                                   analyzed=True, ms=12.5)]
            result.findings = [
                Finding(kind, f"public.table_{n}",
                        f"finding {kind} of statement {n}: " + "evidence " * 150,
                        "the fix " * 100)
                for kind in ("seq_scan", "sort_limit", "misestimate", "temp_spill",
                             "rows_removed")]
        results.append(result)
    return Analysis(database="postgresql://analyst@db.example.com:5432/app",
                    collected_at="2025-01-02T03:04:05+00:00", results=results,
                    recommendations=[{"table": "public.t", "sql": "CREATE INDEX " + "z" * 5000}
                                     for _ in range(8)],
                    notes=["a long note " * 500 for _ in range(5)])


def _texts(node: Any) -> Iterator[tuple[str, str]]:
    """Every (type, text) of a text object in a Block Kit structure."""
    if isinstance(node, dict):
        if isinstance(node.get("text"), str) and node.get("type") in ("mrkdwn", "plain_text"):
            yield node["type"], node["text"]
        for value in node.values():
            yield from _texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)


def test_blocks_stay_within_slack_limits_for_fifty_long_statements() -> None:
    analysis = _long_analysis(50)
    blocks = render.blocks(analysis)
    assert 0 < len(blocks) <= 50
    texts = list(_texts(blocks))
    assert texts
    for kind, text in texts:
        assert len(text) <= 3000, (kind, len(text))
    header = blocks[0]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    assert "50 statements" in header["text"]["text"]
    everything = "\n".join(text for _, text in texts)
    assert "more in the report file" in everything  # what did not fit is pointed at
    assert "postgresql://analyst@db.example.com:5432/app" in everything
    json.dumps(blocks)


def _letters(n: int) -> str:
    """0 → aa, 1 → ab, …: table names without digits (pg_query's fingerprint ignores those)."""
    return chr(ord("a") + n // 26) + chr(ord("a") + n % 26)


async def test_an_analysis_of_fifty_real_statements_fits_slack_and_the_report(
        database: str) -> None:
    names = [f"tiles_{_letters(n)}" for n in range(60)]
    with psycopg.connect(database, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL(
                "CREATE TABLE {} AS SELECT i AS id, i % 7 AS kind "
                "FROM generate_series(1, 200) AS i").format(sql.Identifier(name)))
        conn.execute("ANALYZE")
        conn.execute(RESET_SQL)
        for name in names:
            conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE kind = %s").format(
                sql.Identifier(name)), (3,)).fetchall()
    analysis = await analyze(settings_for(database), top=50)
    assert len(analysis.results) == 50
    assert len({r.statement.identity for r in analysis.results}) == 50
    assert all(r.error is None and r.runs for r in analysis.results)

    blocks = render.blocks(analysis)
    assert len(blocks) <= 50
    assert all(len(text) <= 3000 for _, text in _texts(blocks))
    text = render.markdown(analysis)
    for result in analysis.results:
        assert result.statement.query in text
        for finding in result.findings:
            assert finding.detail.replace("|", "\\|") in text


def test_blocks_of_a_small_analysis_show_every_statement() -> None:
    analysis = _long_analysis(3)
    analysis.recommendations, analysis.notes = [], []
    blocks = render.blocks(analysis)
    everything = "\n".join(text for _, text in _texts(blocks))
    for n in range(3):
        assert f"statement {n}" in everything
    assert "more in the report file" not in everything


def test_markdown_contains_every_statement_and_finding() -> None:
    analysis = _long_analysis(50)
    text = render.markdown(analysis)
    for result in analysis.results:
        assert result.statement.query in text
        if result.error:
            assert result.error in text
        for finding in result.findings:
            assert finding.detail in text
            assert finding.fix in text
    for note in analysis.notes:
        assert note in text
    assert render.filename(analysis) == "query-performance-analysis-2025-01-02.md"


# --- the command line -------------------------------------------------------------------------


def hotdata(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items()
           if not name.upper().startswith(("HOTDATA_", "SLACK_"))}
    env["COLUMNS"] = "400"
    return subprocess.run([str(HOTDATA), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=90, check=False)


def test_cli_analyze_prints_json_of_the_designed_shape(worked: str, tmp_path: Path) -> None:
    done = hotdata(tmp_path, "analyze", "--dsn", worked, "--format", "json", "--top", "3")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    check_shape(report)
    assert len(report["queries"]) == 3
    assert report["database"] == redact_dsn(worked)
    assert all(TILES.get(sqltext.identity(q["query"])) for q in report["queries"]), [
        q["query"] for q in report["queries"]]
    totals = [q["total_ms"] for q in report["queries"]]
    assert totals == sorted(totals, reverse=True)


def test_cli_analyze_top_zero_is_one_line_and_exit_2(worked: str, tmp_path: Path) -> None:
    done = hotdata(tmp_path, "analyze", "--dsn", worked, "--format", "json", "--top", "0")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "top" in lines[0] and "between 1 and 50" in lines[0]

