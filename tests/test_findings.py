"""Findings: each kind detected on a case built to trigger it, and not on a case built not to,
through the real pipeline against a real PostgreSQL; plus the pure helpers they rest on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from bot import pgcluster, sqltext
from bot.advisor.pipeline import analyze
from bot.analysis import findings, params, session
from bot.analysis.model import Finding, PlanRun, QueryResult
from bot.analysis.plan import plan_document
from bot.catalog import Table
from bot.settings import Settings
from tests.harness import TEMPLATE, clone, drop, watched_file

ROWS = 200_000

# One dataset for the whole module; every table has ROWS rows and is analysed, so the planner's
# choices below are unambiguous.
DATASET_SQL = f"""
-- people: k has no index, k2 has one, email has one, k3 has only an invalid one
CREATE TABLE people AS
SELECT i AS id, i % 50000 AS k, i % 50000 AS k2, i % 50000 AS k3,
       'user' || i || '@example.com' AS email
FROM generate_series(1, {ROWS}) AS i;
ALTER TABLE people ADD PRIMARY KEY (id);
CREATE INDEX people_k2_idx ON people (k2);
CREATE INDEX people_email_idx ON people (email);

-- events: account 1 owns a quarter of the rows (50,000), accounts 2..51 about 3,000 each,
-- stored together (an account's rows fill a few neighbouring pages, so an index on account
-- clearly beats a Seq Scan); flag is rare (about 1 %) and independent of the account
CREATE TABLE events_single AS
SELECT * FROM (
  SELECT i AS id,
         CASE WHEN i % 4 = 0 THEN 1 ELSE 2 + (i / 4) % 50 END AS account,
         (i % 97 = 3) AS flag,
         timestamptz '2024-01-01 00:00+00' + i * interval '1 minute' AS created_at
  FROM generate_series(1, {ROWS}) AS i) AS g
ORDER BY account, id;
CREATE INDEX events_single_account_idx ON events_single (account);
CREATE TABLE events_composite AS SELECT * FROM events_single;
CREATE INDEX events_composite_account_flag_idx ON events_composite (account, flag);
CREATE INDEX events_composite_account_created_idx
  ON events_composite (account, created_at DESC);

-- pairs: a and b are the same column twice (100 values, 2,000 rows each)
CREATE TABLE pairs AS
SELECT i AS id, i % 100 AS a, i % 100 AS b FROM generate_series(1, {ROWS}) AS i;

-- inbox_skewed: user 1 owns a sixth of the rows, 20,000 others about 8 each, stored in no
-- order; a seventh unread. inbox_even: as many rows, spread evenly over the users. Both with
-- an index on the user and one on the time: a user's few rows are best found by the first
-- and sorted, user 1's latest by walking the second back (a plan far cheaper for that value).
CREATE TABLE inbox_skewed AS
SELECT i AS id, CASE WHEN i % 6 = 0 THEN 1 ELSE 2 + i % 20000 END AS user_id,
       i % 7 <> 0 AS read,
       timestamptz '2024-01-01 00:00+00' + i * interval '1 minute' AS created_at,
       md5(i::text) AS body
FROM generate_series(1, {ROWS}) AS i ORDER BY md5(i::text);
CREATE TABLE inbox_even AS SELECT id, 2 + id % 20000 AS user_id, read, created_at, body
FROM inbox_skewed;
CREATE INDEX inbox_skewed_user_idx ON inbox_skewed (user_id);
CREATE INDEX inbox_skewed_created_idx ON inbox_skewed (created_at);
CREATE INDEX inbox_even_user_idx ON inbox_even (user_id);
CREATE INDEX inbox_even_created_idx ON inbox_even (created_at);

-- notes: a wide text column (about 33 MB to sort, far beyond the default 4 MB work_mem)
CREATE TABLE notes AS
SELECT i AS id, md5(i::text) || repeat('x', 100) || md5((i * 7)::text) AS body
FROM generate_series(1, {ROWS}) AS i;
ALTER TABLE notes ADD PRIMARY KEY (id);
"""


@pytest.fixture(scope="module")
def dataset(pg: pgcluster.Cluster) -> Iterator[str]:
    """URL of a module-wide database holding the tables above, analysed."""
    name = clone(pg, TEMPLATE)
    try:
        with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
            conn.execute(DATASET_SQL)
            # A failed CREATE INDEX CONCURRENTLY leaves an invalid index behind.
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("CREATE UNIQUE INDEX CONCURRENTLY people_k3_idx ON people (k3)")
            assert conn.execute(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = 'people_k3_idx'::regclass"
            ).fetchone() == (False,)
            conn.execute("VACUUM ANALYZE")
        yield pg.url(name)
    finally:
        drop(pg, name)


async def analyse_watched(url: str, directory: Path, queries: dict[str, str],
                          **settings: Any) -> dict[str, QueryResult]:
    """Analyse `queries` as watched queries; the results by name."""
    config = Settings(_env_file=None,  # type: ignore[call-arg]
                      database_url=url, watched_queries=watched_file(
                          directory, [{"name": n, "sql": q} for n, q in queries.items()]),
                      **settings)
    analysis = await analyze(config, top=5)
    by_name = {r.statement.name: r for r in analysis.results if r.statement.name}
    assert set(queries) <= set(by_name), analysis
    return by_name


def rows_in(detail: str, verb: str) -> int:
    """The row count a finding's detail gives after `verb` (`reads 199,996 rows …`)."""
    found = re.search(verb + r" ([\d,]+) rows", detail)
    assert found, detail
    return int(found.group(1).replace(",", ""))


def kinds(result: QueryResult) -> set[tuple[str, str | None]]:
    return {(f.kind, f.table) for f in result.findings}


def kind_names(result: QueryResult) -> set[str]:
    return {f.kind for f in result.findings}


def planned(result: QueryResult) -> None:
    """The statement was planned and measured without error."""
    assert result.error is None, result.error
    assert result.runs, result
    for run in result.runs:
        assert run.error is None, run.error
        assert run.plan is not None
        assert run.analyzed is True
        assert run.ms is not None


# --- seq_scan ---------------------------------------------------------------------------------


async def test_seq_scan_on_a_large_table_with_a_selective_filter_and_no_index(
        dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "no index": "SELECT * FROM people WHERE k = 4242",
        "indexed": "SELECT * FROM people WHERE k2 = 4242",
    })
    positive, negative = results["no index"], results["indexed"]
    planned(positive)
    planned(negative)
    assert kinds(positive) == {("seq_scan", "public.people")}
    finding = positive.findings[0]
    assert rows_in(finding.detail, "reads") >= 190_000  # the whole table, give or take
    assert "(k)" in finding.fix
    assert "Seq Scan on public.people" in positive.plan_summary
    assert negative.findings == []
    assert "people_k2_idx" in negative.plan_summary


async def test_seq_scan_from_the_pg_stat_statements_workload(dataset: str) -> None:
    """The `$n` form the application sent is planned with values from pg_stats."""
    with psycopg.connect(dataset, autocommit=True) as conn:
        for value in (17, 4242, 31337):
            conn.execute("SELECT * FROM people WHERE k = %s", (value,)).fetchall()
            conn.execute("SELECT * FROM people WHERE k2 = %s", (value,)).fetchall()
    config = Settings(_env_file=None, database_url=dataset)  # type: ignore[call-arg]
    analysis = await analyze(config, top=10)
    by_identity = {r.statement.identity: r for r in analysis.results}
    positive = by_identity[sqltext.identity("SELECT * FROM people WHERE k = 1")]
    negative = by_identity[sqltext.identity("SELECT * FROM people WHERE k2 = 1")]
    for result in (positive, negative):
        assert result.statement.source == "pg_stat_statements"
        assert "$1" in result.statement.query
        assert result.statement.calls == 3
        planned(result)
        assert {run.label for run in result.runs} <= {"common", "median", "rare"}
    assert kinds(positive) == {("seq_scan", "public.people")}
    assert negative.findings == []


# --- rows_removed -----------------------------------------------------------------------------


async def test_rows_removed_when_the_index_covers_only_part_of_the_filter(
        dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "account only": "SELECT * FROM events_single WHERE account = 7 AND flag",
        "composite": "SELECT * FROM events_composite WHERE account = 7 AND flag",
    })
    positive, negative = results["account only"], results["composite"]
    planned(positive)
    planned(negative)
    assert ("rows_removed", "public.events_single") in kinds(positive)
    finding = next(f for f in positive.findings if f.kind == "rows_removed")
    assert "flag" in finding.fix
    assert "rows_removed" not in kind_names(negative)
    assert "events_composite_account_flag_idx" in negative.plan_summary


# --- sort_limit -------------------------------------------------------------------------------


async def test_sort_limit_when_no_index_gives_the_order(dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "sorts": "SELECT * FROM events_single WHERE account = 1 "
                 "ORDER BY created_at DESC LIMIT 10",
        "ordered index": "SELECT * FROM events_composite WHERE account = 1 "
                         "ORDER BY created_at DESC LIMIT 10",
    })
    positive, negative = results["sorts"], results["ordered index"]
    planned(positive)
    planned(negative)
    assert ("sort_limit", "public.events_single") in kinds(positive)
    finding = next(f for f in positive.findings if f.kind == "sort_limit")
    assert 49_000 <= rows_in(finding.detail, "sorts") <= 51_000  # account 1's rows
    assert "created_at DESC" in finding.detail
    assert "sort_limit" not in kind_names(negative)
    assert negative.findings == []
    assert "events_composite_account_created_idx" in negative.plan_summary


# --- misestimate ------------------------------------------------------------------------------


async def test_misestimate_on_correlated_columns(dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "correlated": "SELECT * FROM pairs WHERE a = 1 AND b = 1",
        "single": "SELECT * FROM pairs WHERE a = 1",
    })
    positive, negative = results["correlated"], results["single"]
    planned(positive)
    planned(negative)
    assert ("misestimate", "public.pairs") in kinds(positive)
    finding = next(f for f in positive.findings if f.kind == "misestimate")
    assert "times off" in finding.detail
    assert "misestimate" not in kind_names(negative)


async def test_misestimate_on_a_bitmap_index_scan_names_the_table_of_its_index(
        dataset: str, tmp_path: Path) -> None:
    """A Bitmap Index Scan names only its index: the finding goes to the index's table (its
    Bitmap Heap Scan's), not to no table."""
    with psycopg.connect(dataset, autocommit=True) as conn:
        conn.execute("CREATE TABLE pairs_indexed AS SELECT i AS id, i % 100 AS a, i % 100 AS b "
                     "FROM generate_series(1, 20000) AS i")
        conn.execute("CREATE INDEX pairs_indexed_a_b_idx ON pairs_indexed (a, b)")
        conn.execute("VACUUM ANALYZE pairs_indexed")
    results = await analyse_watched(dataset, tmp_path, {
        "either pair": "SELECT * FROM pairs_indexed WHERE (a = 1 AND b = 1) OR (a = 2 AND b = 2)",
    })
    result = results["either pair"]
    planned(result)
    assert "Bitmap Index Scan" in result.plan_summary
    misestimates = [f for f in result.findings if f.kind == "misestimate"]
    assert [f.table for f in misestimates] == ["public.pairs_indexed"]
    runs = [r for r in result.runs if r.plan is not None]
    everything = [f for r in runs for f in findings.plan_findings(r, result.tables)
                  if f.kind == "misestimate"]
    on_index = [f for f in everything if f.detail.startswith("Bitmap Index Scan")]
    assert on_index, everything
    for finding in on_index:
        assert finding.table == "public.pairs_indexed"
        assert finding.detail.startswith("Bitmap Index Scan on pairs_indexed_a_b_idx ")
        assert finding.fix.startswith("ANALYZE public.pairs_indexed;")


# --- temp_spill -------------------------------------------------------------------------------


async def test_temp_spill_of_a_large_sort(dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "big sort": "SELECT * FROM notes ORDER BY body",
        "small sort": "SELECT * FROM notes WHERE id <= 100 ORDER BY body",
    })
    positive, negative = results["big sort"], results["small sort"]
    planned(positive)
    planned(negative)
    assert ("temp_spill", "public.notes") in kinds(positive)
    assert "work_mem" in next(f for f in positive.findings if f.kind == "temp_spill").fix
    assert "temp_spill" not in kind_names(negative)


# --- rls_per_row ------------------------------------------------------------------------------


async def test_rls_per_row_for_a_policy_calling_auth_uid_per_row(
        hotdash: str, tmp_path: Path) -> None:
    results = await analyse_watched(hotdash, tmp_path, {
        "notifications": "SELECT count(*) FROM notifications WHERE read = false",
        "decisions": "SELECT count(*) FROM decision_log WHERE status = 'pending'",
    }, app_role="authenticated")
    positive, negative = results["notifications"], results["decisions"]
    assert positive.error is None and negative.error is None
    assert ("rls_per_row", "public.notifications") in kinds(positive)
    finding = next(f for f in positive.findings if f.kind == "rls_per_row")
    assert "notifications_select_own" in finding.detail
    assert "auth.uid()" in finding.detail
    assert "select auth.uid()" in finding.fix
    assert "rls_per_row" not in kind_names(negative)


# --- unusable_index ---------------------------------------------------------------------------


async def test_unusable_index_when_the_column_is_wrapped_in_a_function(
        dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "wrapped": "SELECT * FROM people WHERE lower(email) = 'user4242@example.com'",
        "bare": "SELECT * FROM people WHERE email = 'user4242@example.com'",
    })
    positive, negative = results["wrapped"], results["bare"]
    planned(positive)
    planned(negative)
    assert ("unusable_index", "public.people") in kinds(positive)
    finding = next(f for f in positive.findings if f.kind == "unusable_index")
    assert "people_email_idx" in finding.detail
    assert "unusable_index" not in kind_names(negative)
    assert negative.findings == []
    assert "people_email_idx" in negative.plan_summary


async def test_unusable_index_when_the_index_is_invalid(dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "invalid index": "SELECT * FROM people WHERE k3 = 4242",
        "no index": "SELECT * FROM people WHERE k = 4242",
    })
    positive, negative = results["invalid index"], results["no index"]
    planned(positive)
    finding = next(f for f in positive.findings if f.kind == "unusable_index")
    assert finding.table == "public.people"
    assert "people_k3_idx" in finding.detail and "invalid" in finding.detail
    assert "people_k3_idx" in finding.fix
    assert "unusable_index" not in kind_names(negative)


# --- generic_plan -----------------------------------------------------------------------------


async def test_generic_plan_when_a_prepared_statement_is_slow_for_a_heavy_value(
        dataset: str, tmp_path: Path) -> None:
    """The application's database forces the generic plan: whether PostgreSQL would settle
    on it by itself compares two nearly equal costs here, made from sampled statistics (that
    choice is `generic_chosen`'s, tested on its own)."""
    latest = "SELECT * FROM {} WHERE user_id = $1 AND NOT read ORDER BY created_at DESC LIMIT 20"
    name = dataset.rsplit("/", 1)[-1]
    with psycopg.connect(dataset, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} SET plan_cache_mode = force_generic_plan")
    try:
        results = await analyse_watched(dataset, tmp_path, {
            "skewed": latest.format("inbox_skewed"), "even": latest.format("inbox_even")})
    finally:
        with psycopg.connect(dataset, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} RESET plan_cache_mode")
    positive, negative = results["skewed"], results["even"]
    planned(positive)
    planned(negative)
    generic = positive.generic_run
    assert generic is not None and generic.label == "common" and generic.values == ["1"]
    assert generic.plan is not None and generic.ms is not None
    own = next(r for r in positive.runs if r.label == "common")
    assert own.ms is not None and generic.ms >= 5 * own.ms
    assert ("generic_plan", "public.inbox_skewed") in kinds(positive)
    finding = next(f for f in positive.findings if f.kind == "generic_plan")
    assert "inbox_skewed_created_idx" in finding.detail  # the custom plan's index scan
    assert "Sort" in finding.detail  # the generic plan sorts the heavy user's rows
    assert "plan_cache_mode = force_custom_plan" in finding.fix
    # There the generic plan is planned too, and found to be the value's own plan.
    assert negative.generic_run is not None and negative.generic_run.plan is not None
    assert "generic_plan" not in kind_names(negative)


async def test_no_generic_plan_when_the_application_plans_each_call(
        dataset: str, tmp_path: Path) -> None:
    """With plan_cache_mode = force_custom_plan where the application runs (here: its
    database), a prepared statement never switches: nothing to run, nothing to report."""
    name = dataset.rsplit("/", 1)[-1]
    with psycopg.connect(dataset, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} SET plan_cache_mode = force_custom_plan")
    try:
        results = await analyse_watched(dataset, tmp_path, {"skewed": (
            "SELECT * FROM inbox_skewed WHERE user_id = $1 AND NOT read "
            "ORDER BY created_at DESC LIMIT 20")})
    finally:
        with psycopg.connect(dataset, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} RESET plan_cache_mode")
    planned(results["skewed"])
    assert results["skewed"].generic_run is None
    assert "generic_plan" not in kind_names(results["skewed"])


async def test_plan_cache_mode_of_the_application_most_specific_first(dataset: str) -> None:
    name = dataset.rsplit("/", 1)[-1]
    role = "app_" + name
    statements = [
        (f"ALTER DATABASE {name} SET plan_cache_mode = force_generic_plan",
         "force_generic_plan", "force_generic_plan"),
        (f"ALTER ROLE {role} SET plan_cache_mode = 'FORCE_CUSTOM_PLAN'",  # stored as written
         "force_custom_plan", "force_generic_plan"),
        (f"ALTER ROLE {role} IN DATABASE {name} SET plan_cache_mode = auto",
         "auto", "force_generic_plan"),
    ]
    with psycopg.connect(dataset, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        async with await psycopg.AsyncConnection.connect(
                dataset, autocommit=True, row_factory=dict_row) as conn:
            assert await session.plan_cache_mode(conn, role) == "auto"
            for statement, for_role, for_anyone in statements:
                await conn.execute(statement)
                assert await session.plan_cache_mode(conn, role) == for_role, statement
                assert await session.plan_cache_mode(conn, None) == for_anyone, statement
    finally:
        with psycopg.connect(dataset, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} RESET plan_cache_mode")
            conn.execute(f"DROP ROLE {role}")


def _run(label: str, values: list[str | None], cost: float, ms: float | None,
         kind: str = "Index Scan", error: str | None = None) -> PlanRun:
    plan = {"Plan": {"Node Type": kind, "Relation Name": "t", "Total Cost": cost}}
    return PlanRun("owner", label, values, plan=plan, analyzed=True, ms=ms, error=error)


@pytest.mark.parametrize(("generic_cost", "generic_ms", "mode", "fires"), [
    (10.0, 4.0, "auto", True),  # chosen (10 < the average custom cost with planning) and slow
    (60.0, 4.0, "auto", False),  # slow, but PostgreSQL keeps planning per value: dearer
    (60.0, 4.0, "force_generic_plan", True),  # …unless told to use the generic plan
    (10.0, 4.0, "force_custom_plan", False),  # or never to
    (10.0, 0.3, "auto", False),  # chosen, 6x slower, but only 0.25 ms more
    (10.0, 0.1, "auto", False),  # chosen and as fast
    (10.0, None, "auto", True),  # chosen and did not finish within the statement timeout
])
def test_generic_plan_needs_the_generic_plan_chosen_and_much_slower(
        generic_cost: float, generic_ms: float | None, mode: str, fires: bool) -> None:
    runs = [_run("common", ["1"], 40.0, 0.05), _run("median", ["2"], 12.0, 0.02),
            _run("rare", ["3"], 8.0, 0.02)]
    generic = _run("common", ["1"], generic_cost, generic_ms, "Bitmap Heap Scan",
                   None if generic_ms is not None else "did not finish in 5 s")
    found = findings.generic_plan_finding(generic, runs, {}, mode)
    assert (found is not None) is fires
    if found is not None:
        assert found.kind == "generic_plan" and "Bitmap Heap Scan" in found.detail
        assert ("did not finish in 5 s" in found.detail) is (generic_ms is None)
    # the same plan as the value's own is no switch, however slow
    same = _run("common", ["1"], generic_cost, generic_ms, "Index Scan")
    assert findings.generic_plan_finding(same, runs, {}, mode) is None


# --- timeout ----------------------------------------------------------------------------------


async def test_timeout_is_a_finding_and_the_other_queries_still_get_plans(
        dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "slow": "SELECT count(*) FROM people a CROSS JOIN people b",
        "fast": "SELECT * FROM people WHERE k2 = 4242",
        "also fast": "SELECT id FROM people WHERE email = 'user7@example.com'",
    }, statement_timeout_ms=100)
    slow = results["slow"]
    assert slow.error is None
    assert [f.kind for f in slow.findings] == ["timeout"]
    assert "0.1 s" in slow.findings[0].detail
    assert all(run.plan is None and run.error for run in slow.runs)
    for name in ("fast", "also fast"):
        planned(results[name])
        assert "timeout" not in kind_names(results[name])


async def test_no_timeout_finding_with_a_generous_timeout(dataset: str, tmp_path: Path) -> None:
    results = await analyse_watched(dataset, tmp_path, {
        "count": "SELECT count(*) FROM people WHERE k = 4242",
    }, statement_timeout_ms=30_000)
    planned(results["count"])
    assert "timeout" not in kind_names(results["count"])


# --- PostgreSQL 18's EXPLAIN ------------------------------------------------------------------

# EXPLAIN (ANALYZE, FORMAT JSON) from PostgreSQL 18.6, trimmed: BUFFERS come without being asked
# (each node's and the planning's blocks), "Disabled" is new, and "Actual Rows" is a per-loop
# average with decimals (342 rows over 4 loops: 85.5); earlier versions print whole numbers.
PG18_PLAN = """[{"Plan": {
  "Node Type": "Nested Loop", "Join Type": "Inner", "Total Cost": 4911.84, "Plan Rows": 4,
  "Actual Total Time": 12.899, "Actual Rows": 0.0, "Actual Loops": 1, "Disabled": false,
  "Shared Hit Blocks": 1300, "Shared Read Blocks": 0, "Temp Written Blocks": 0,
  "Plans": [
    {"Node Type": "Function Scan", "Parent Relationship": "Outer",
     "Function Name": "generate_series", "Alias": "s", "Total Cost": 0.04, "Plan Rows": 4,
     "Actual Rows": 4.0, "Actual Loops": 1, "Disabled": false, "Shared Hit Blocks": 0,
     "Temp Written Blocks": 0},
    {"Node Type": "Limit", "Parent Relationship": "Inner", "Total Cost": 1227.94,
     "Plan Rows": 1, "Actual Rows": 0.0, "Actual Loops": 4, "Disabled": false,
     "Shared Hit Blocks": 1300, "Temp Written Blocks": 0,
     "Plans": [
       {"Node Type": "Sort", "Parent Relationship": "Outer", "Total Cost": 1227.94,
        "Plan Rows": 85, "Actual Rows": 85.5, "Actual Loops": 4, "Disabled": false,
        "Sort Key": ["readings.id"], "Sort Method": "quicksort", "Sort Space Used": 25,
        "Sort Space Type": "Memory", "Shared Hit Blocks": 1300, "Temp Written Blocks": 0,
        "Plans": [
          {"Node Type": "Seq Scan", "Parent Relationship": "Outer",
           "Relation Name": "readings", "Alias": "readings", "Total Cost": 1225.0,
           "Plan Rows": 85, "Actual Rows": 85.5, "Actual Loops": 4, "Disabled": false,
           "Filter": "((sensor = s.s) AND (v = 0))", "Rows Removed by Filter": 59914,
           "Shared Hit Blocks": 1300, "Shared Read Blocks": 0, "Temp Read Blocks": 0,
           "Temp Written Blocks": 0}]}]}]},
  "Planning": {"Shared Hit Blocks": 25, "Shared Read Blocks": 3, "Temp Written Blocks": 0},
  "Planning Time": 0.312, "Triggers": [], "Execution Time": 12.921}]"""


def test_a_postgresql_18_plan_with_buffers_and_fractional_rows_is_read() -> None:
    run = PlanRun("owner", "common", ["0"], analyzed=True,
                  plan=plan_document({"QUERY PLAN": PG18_PLAN}))
    assert run.plan is not None and run.plan["Execution Time"] == 12.921
    readings = Table(1, "public", "readings", rows=60_000, columns=["id", "sensor", "v"])
    tables = {"readings": readings}
    # rows over all loops: 85.5 * 4 returned, (59,914 + 85.5) * 4 read
    [scan] = findings.plan_findings(run, tables)
    assert scan.kind == "seq_scan" and scan.table == "public.readings"
    assert scan.detail.startswith("Seq Scan on public.readings reads 239,998 rows to return "
                                  "342 (filter ((sensor = s.s) AND (v = 0)))")
    assert findings.summarize(run.plan, tables) == ("Nested Loop [0 rows] → "
                                                    "Function Scan [4 rows]")


# --- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "calls"), [
    ("(user_id = auth.uid())", ["auth.uid()"]),
    ("(user_id = ( SELECT auth.uid() AS uid))", []),
    ("((auth.jwt() ->> 'role'::text) = 'admin'::text)", ["auth.jwt()"]),
    ("(tenant_id = (current_setting('app.tenant'::text))::integer)", ["current_setting()"]),
    ("((( SELECT auth.uid() AS uid) = user_id) OR (owner_id = auth.uid()))", ["auth.uid()"]),
    ("(user_id IN ( SELECT m.user_id FROM members m WHERE m.org = auth.uid()))", []),
    ("(owner = CURRENT_USER)", []),
    ("(user_id = uid())", []),  # not the auth schema's function
    (None, []),
    ("", []),
    ("((( not sql", []),
])
def test_per_row_calls(expression: str | None, calls: list[str]) -> None:
    assert findings.per_row_calls(expression) == calls


@pytest.mark.parametrize(("expression", "columns"), [
    ("((user_id = '3e334e85-9879-af25-6d38-27d651b7804a'::uuid) AND (read = false))",
     ["user_id", "read"]),
    ("((t.a = 1) AND (t.b > 2) AND (t.a < 5))", ["a", "b"]),
    ("(lower(email) = 'x@example.com'::text)", ["email"]),
    ("(created_at >= (now() - '7 days'::interval))", ["created_at"]),
    ("(status = ANY ('{pending,escalated}'::text[]))", ["status"]),
    (None, []),
    ("", []),
    ("((( not sql", []),
])
def test_filter_columns(expression: str | None, columns: list[str]) -> None:
    assert findings.filter_columns(expression) == columns


def test_repair_turns_typed_literal_parameters_into_casts() -> None:
    text = ("SELECT product_id, sum(qty) FROM inventory_actions "
            "WHERE created_at >= now() - interval $1 GROUP BY product_id")
    repaired = sqltext.repair(text)
    assert "interval $1" not in repaired
    assert "CAST($1 AS interval)" in repaired
    assert sqltext.fingerprint(repaired) == sqltext.fingerprint(text)
    dated = sqltext.repair("SELECT * FROM t WHERE d > date $1 AND n = $2")
    assert "CAST($1 AS date)" in dated and "n = $2" in dated


@pytest.mark.parametrize("text", [
    "SELECT * FROM notifications WHERE user_id = $1 AND read = $2 LIMIT $3",
    "SELECT * FROM t WHERE x = $1::int",
    "SELECT CAST($1 AS interval)",
])
def test_repair_leaves_preparable_texts_alone(text: str) -> None:
    assert sqltext.repair(text) == text


def test_repair_of_an_unparseable_text_raises() -> None:
    with pytest.raises(sqltext.Unparseable):
        sqltext.repair("SELECT * FROM notifications WHERE user_id = $1 AND")


@pytest.mark.parametrize(("text", "why"), [
    ("UPDATE notifications SET read = true WHERE user_id = $1", "UPDATE"),
    ("DELETE FROM notifications WHERE id = 1", "DELETE"),
    ("INSERT INTO notifications (user_id, kind) VALUES ($1, 'system')", "INSERT"),
    ("WITH gone AS (DELETE FROM notifications WHERE read RETURNING id) "
     "SELECT count(*) FROM gone", "data-modifying"),
    ("WITH a AS (WITH b AS (UPDATE t SET x = 1 RETURNING x) SELECT x FROM b) SELECT * FROM a",
     "data-modifying"),
    ("SELECT * FROM notifications WHERE user_id = $1 FOR UPDATE", "FOR UPDATE"),
    ("SELECT * FROM notifications FOR SHARE SKIP LOCKED", "FOR UPDATE/SHARE"),
    ("SELECT * FROM (SELECT * FROM notifications FOR UPDATE) AS s", "FOR UPDATE"),
    ("SELECT * INTO copy_of_notifications FROM notifications", "SELECT INTO"),
    ("SELECT * FROM notifications WHERE", "cannot be parsed"),
    ("SELECT 1; SELECT 2", "cannot be parsed"),
])
def test_plain_select_problem_refuses_what_explain_analyze_must_not_run(
        text: str, why: str) -> None:
    problem = sqltext.plain_select_problem(text)
    assert problem is not None
    assert why in problem


@pytest.mark.parametrize("text", [
    "SELECT * FROM notifications WHERE user_id = $1",
    "WITH recent AS (SELECT * FROM notifications WHERE created_at > now() - interval '1 day') "
    "SELECT count(*) FROM recent",
    "SELECT d.id, p.email FROM decision_log d JOIN profiles p ON p.id = d.user_id "
    "WHERE d.status = 'pending' ORDER BY d.created_at LIMIT 100",
    "SELECT 1 UNION ALL SELECT 2",
])
def test_plain_select_problem_allows_plain_selects(text: str) -> None:
    assert sqltext.plain_select_problem(text) is None


def test_param_uses_maps_parameters_to_columns_and_limits() -> None:
    Use = sqltext.ParamUse
    assert sqltext.param_uses(
        "SELECT * FROM notifications WHERE user_id = $1 AND read = $2 "
        "ORDER BY created_at DESC LIMIT $3") == {
        1: Use(1, "column", "notifications", "user_id"),
        2: Use(2, "column", "notifications", "read"),
        3: Use(3, "limit"),
    }
    assert sqltext.param_uses(
        "SELECT d.id FROM decision_log d JOIN profiles p ON p.id = d.user_id "
        "WHERE d.status = $1 AND p.email = $2 AND kind = $5 LIMIT $3 OFFSET $4") == {
        1: Use(1, "column", "decision_log", "status"),
        2: Use(2, "column", "profiles", "email"),
        3: Use(3, "limit"),
        4: Use(4, "offset"),
        5: Use(5, "column", None, "kind"),  # unqualified in a join: table unknown
    }
    assert sqltext.param_uses(
        "SELECT * FROM public.notifications n WHERE $1 = n.user_id AND n.kind IN ($2, $3) "
        "AND n.created_at > $4::timestamptz") == {
        1: Use(1, "column", "public.notifications", "user_id"),
        2: Use(2, "column", "public.notifications", "kind"),
        3: Use(3, "column", "public.notifications", "kind"),
        4: Use(4, "column", "public.notifications", "created_at", above=True),
    }
    assert sqltext.param_uses(
        "SELECT * FROM t WHERE $1 < a AND b BETWEEN $2 AND $3 AND c <= $4 AND $5 >= d") == {
        1: Use(1, "column", "t", "a", above=True), 2: Use(2, "column", "t", "b", above=True),
        3: Use(3, "column", "t", "b", below=True), 4: Use(4, "column", "t", "c", below=True),
        5: Use(5, "column", "t", "d", below=True)}
    assert sqltext.param_uses("SELECT count(*) FROM decision_log WHERE status = 'pending'") == {}


def test_fingerprint_is_the_same_for_literal_and_parameter_forms() -> None:
    literal = ("SELECT * FROM notifications WHERE user_id = "
               "'3e334e85-9879-af25-6d38-27d651b7804a' AND read = false "
               "ORDER BY created_at DESC LIMIT 20")
    other_values = ("SELECT * FROM notifications WHERE user_id = "
                    "'002919af-9552-c770-35b1-da1a23988191' AND read = true "
                    "ORDER BY created_at DESC LIMIT 50")
    parameters = ("SELECT * FROM notifications WHERE user_id = $1 AND read = $2 "
                  "ORDER BY created_at DESC LIMIT $3")
    assert sqltext.fingerprint(literal) == sqltext.fingerprint(parameters)
    assert sqltext.fingerprint(other_values) == sqltext.fingerprint(parameters)
    assert sqltext.fingerprint(
        "SELECT sum(qty) FROM inventory_actions WHERE created_at >= now() - interval '7 days'"
    ) == sqltext.fingerprint(
        "SELECT sum(qty) FROM inventory_actions WHERE created_at >= now() - interval $1")
    # a different column, table or shape is a different statement
    assert sqltext.fingerprint(parameters) != sqltext.fingerprint(
        parameters.replace("user_id", "kind"))
    assert sqltext.fingerprint(parameters) != sqltext.fingerprint(
        parameters.replace("notifications", "decision_log"))
    assert sqltext.fingerprint(parameters) != sqltext.fingerprint(
        parameters.replace("DESC", "ASC"))


def test_identity_is_the_same_for_literal_and_parameter_forms_but_tells_tables_apart() -> None:
    literal = ("SELECT theme FROM user_preferences "
               "WHERE user_id = '3e334e85-9879-af25-6d38-27d651b7804a'")
    assert sqltext.identity(literal) == sqltext.identity(
        "SELECT theme FROM user_preferences WHERE user_id = $1")
    # pg_query's fingerprint ignores digits in relation names; the identity does not
    assert sqltext.fingerprint("SELECT * FROM t007 WHERE a = 1") == sqltext.fingerprint(
        "SELECT * FROM t047 WHERE a = 1")
    assert sqltext.identity("SELECT * FROM t007 WHERE a = 1") != sqltext.identity(
        "SELECT * FROM t047 WHERE a = 1")


def test_pick_with_most_common_values_and_a_histogram() -> None:
    values = params.pick(["heavy", "busy", "often"], [0.5, 0.3, 0.1],
                         ["h0", "h1", "h2", "h3", "h4"])
    assert values == params.ColumnValues(common="heavy", median="h2", rare="h0")
    assert [values.get(label) for label in params.LABELS] == ["heavy", "h2", "h0"]


def test_pick_with_most_common_values_only_orders_them_by_frequency() -> None:
    values = params.pick(["a", "b", "c", "d", "e"], [0.4, 0.3, 0.15, 0.1, 0.05], None)
    assert values == params.ColumnValues(common="a", median="c", rare="e")
    assert params.pick(["t", "f"], [0.85, 0.15], None) == params.ColumnValues("t", "f", "f")


def test_pick_with_a_histogram_only_or_nothing() -> None:
    assert params.pick(None, None, ["h0", "h1", "h2", "h3"]) == params.ColumnValues(
        "h2", "h2", "h0")
    assert params.pick([], [], []) == params.ColumnValues(None, None, None)
    assert params.pick(None, None, None) == params.ColumnValues(None, None, None)


def test_dedupe_keeps_the_first_finding_per_kind_and_table() -> None:
    first = Finding("seq_scan", "public.a", "first", "fix")
    unique = findings.dedupe([first, Finding("seq_scan", "public.a", "second", "fix"),
                              Finding("seq_scan", "public.b", "b", "fix"),
                              Finding("misestimate", "public.a", "m", "fix")])
    assert [(f.kind, f.table, f.detail) for f in unique] == [
        ("seq_scan", "public.a", "first"), ("seq_scan", "public.b", "b"),
        ("misestimate", "public.a", "m")]
