"""Findings about maintenance and paging: stale statistics, lossy bitmaps, deep OFFSETs and
index-only scans that visit the table. Each is detected on a case built to trigger it and not
on one built not to, through the real pipeline against a real PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot import pgcluster
from bot.advisor.pipeline import analyze
from bot.analysis import findings
from bot.analysis.model import Analysis, Finding, PlanRun, QueryResult
from bot.catalog import Index, Table
from bot.render import analysis as render
from bot.settings import Settings
from tests.harness import TEMPLATE, clone, drop, watched_file

DATASET_SQL = """
-- drifting: analysed over 100,000 rows with k in 0..999 (100 rows each); the tests add rows
-- with k = 5000, a value its statistics have never seen. Autovacuum would analyse it again.
CREATE TABLE drifting (id int, k int, pad text) WITH (autovacuum_enabled = off);
INSERT INTO drifting SELECT i, i % 1000, md5(i::text) FROM generate_series(1, 100000) AS i;
CREATE INDEX drifting_k_idx ON drifting (k);

-- wide: 200,000 rows of about 500 bytes (about 13,000 blocks), k spread at random over
-- 0..4095: k < 60 matches about 2,900 rows on about 2,500 blocks
CREATE TABLE wide AS
SELECT i AS id, hashint4(i) & 4095 AS k, repeat('x', 500) AS pad
FROM generate_series(1, 200000) AS i;
CREATE INDEX wide_k_idx ON wide (k);

-- pages: 200,000 rows, one a minute, stored in created_at order
CREATE TABLE pages AS
SELECT i AS id, md5(i::text) AS body,
       timestamptz '2024-01-01 00:00+00' + i * interval '1 minute' AS created_at
FROM generate_series(1, 200000) AS i;
ALTER TABLE pages ADD PRIMARY KEY (id);
CREATE INDEX pages_created_at_idx ON pages (created_at);

-- visible: read by an index-only scan on k; the test updates rows, autovacuum would vacuum it
CREATE TABLE visible (id int PRIMARY KEY, k int, pad text) WITH (autovacuum_enabled = off);
INSERT INTO visible SELECT i, i, md5(i::text) FROM generate_series(1, 200000) AS i;
CREATE INDEX visible_k_idx ON visible (k);
"""


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `check()` until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)


def changed_since_analyze(url: str, table: str) -> int:
    """pg_stat_user_tables.n_mod_since_analyze as another session (hotdata's) reads it."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT n_mod_since_analyze FROM pg_stat_user_tables "
                           "WHERE relname = %s", (table,)).fetchone()
    return int(row[0]) if row else 0


def write_and_flush(url: str, statement: str) -> None:
    """Run `statement`, and have its session publish its table statistics now rather than
    within the next second or minute."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)
        conn.execute("SELECT pg_stat_force_next_flush()")


def vacuum_until_all_visible(url: str, table: str) -> None:
    """VACUUM until every block of `table` is marked all-visible: a VACUUM right after the
    writes may not yet see them as visible to every transaction."""
    def all_visible() -> bool:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"VACUUM {table}")
            row = conn.execute("SELECT relallvisible >= relpages FROM pg_class "
                               "WHERE oid = %s::regclass", (table,)).fetchone()
        return bool(row and row[0])
    wait_until(f"every block of {table} all-visible", all_visible)


@pytest.fixture(scope="module")
def cases(pg: pgcluster.Cluster) -> Iterator[str]:
    """URL of a module-wide database holding the tables above, analysed and vacuumed."""
    name = clone(pg, TEMPLATE)
    try:
        url = pg.url(name)
        write_and_flush(url, DATASET_SQL)
        wait_until("drifting's inserts counted",
                   lambda: changed_since_analyze(url, "drifting") >= 100_000)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        vacuum_until_all_visible(url, "visible")
        wait_until("drifting analysed", lambda: changed_since_analyze(url, "drifting") == 0)
        yield url
    finally:
        drop(pg, name)


async def analyse_watched(url: str, directory: Path, queries: dict[str, str]
                          ) -> dict[str, QueryResult]:
    """Analyse `queries` as watched queries; the results by name, each planned and measured."""
    config = Settings(_env_file=None,  # type: ignore[call-arg]
                      database_url=url, watched_queries=watched_file(
                          directory, [{"name": n, "sql": q} for n, q in queries.items()]))
    analysis = await analyze(config, top=5)
    by_name = {r.statement.name: r for r in analysis.results if r.statement.name}
    assert set(queries) <= set(by_name), analysis
    for name in queries:
        result = by_name[name]
        assert result.error is None, result.error
        assert result.runs and all(r.plan is not None and r.ms is not None
                                   for r in result.runs), result.runs
    return {name: by_name[name] for name in queries}


def kind_names(result: QueryResult) -> set[str]:
    return {f.kind for f in result.findings}


def finding(result: QueryResult, kind: str) -> Finding:
    found = [f for f in result.findings if f.kind == kind]
    assert found, result.findings
    return found[0]


def number(text: str, pattern: str) -> int:
    """The number `pattern`'s group captures in `text`, without its thousands separators."""
    found = re.search(pattern, text)
    assert found, text
    return int(found.group(1).replace(",", ""))


# --- stale_statistics -------------------------------------------------------------------------


async def test_stale_statistics_when_the_plan_misestimates_on_a_table_changed_since_analyze(
        cases: str, tmp_path: Path) -> None:
    queries = {"new value": "SELECT * FROM drifting WHERE k = 5000",
               "old value": "SELECT id FROM drifting WHERE k = 7"}  # another statement
    write_and_flush(cases, "INSERT INTO drifting SELECT i, 5000, md5(i::text) "
                           "FROM generate_series(1, 50000) AS i")
    wait_until("the inserts counted", lambda: changed_since_analyze(cases, "drifting") >= 50_000)
    results = await analyse_watched(cases, tmp_path, queries)
    positive, unaffected = results["new value"], results["old value"]
    assert "misestimate" in kind_names(positive)
    stale = finding(positive, "stale_statistics")
    assert stale.table == "public.drifting"
    assert number(stale.detail, r"([\d,]+) rows of public.drifting were written") >= 50_000
    assert "estimated" in stale.detail
    assert stale.fix.startswith("ANALYZE public.drifting;")
    assert "autovacuum_analyze_scale_factor" in stale.fix
    # The same stale table, but this value's estimate holds: nothing to report.
    assert {"misestimate", "stale_statistics"}.isdisjoint(kind_names(unaffected))

    with psycopg.connect(cases, autocommit=True) as conn:
        conn.execute("ANALYZE drifting")
    wait_until("drifting analysed", lambda: changed_since_analyze(cases, "drifting") == 0)
    fresh = (await analyse_watched(cases, tmp_path, queries))["new value"]
    assert {"misestimate", "stale_statistics"}.isdisjoint(kind_names(fresh)), fresh.findings


# --- lossy_bitmap -----------------------------------------------------------------------------


async def test_lossy_bitmap_when_work_mem_cannot_hold_the_bitmap(
        cases: str, tmp_path: Path) -> None:
    """work_mem set where the application's sessions pick it up (here: its database); 64kB
    holds about 1,000 blocks exactly, the default 4MB about 65,000."""
    queries = {"scattered": "SELECT * FROM wide WHERE k < 60"}
    name = cases.rsplit("/", 1)[-1]
    with psycopg.connect(cases, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} SET work_mem = '64kB'")
    try:
        small = (await analyse_watched(cases, tmp_path, queries))["scattered"]
    finally:
        with psycopg.connect(cases, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} RESET work_mem")
    assert "Bitmap Heap Scan on public.wide" in small.plan_summary
    lossy = finding(small, "lossy_bitmap")
    assert lossy.table == "public.wide"
    blocks = number(lossy.detail, r"of its ([\d,]+) heap blocks")
    assert 1_000 < blocks < 5_000
    assert number(lossy.detail, r"([\d,]+) of its") > 0
    assert number(lossy.fix, r"work_mem to at least (\d+)MB") == 1  # 64 bytes a block: < 1MB
    assert "more selective index" in lossy.fix

    default = (await analyse_watched(cases, tmp_path, queries))["scattered"]
    assert "Bitmap Heap Scan on public.wide" in default.plan_summary
    assert "lossy_bitmap" not in kind_names(default), default.findings


# --- large_offset -----------------------------------------------------------------------------


async def test_large_offset_when_a_page_is_read_deep_into_the_order(
        cases: str, tmp_path: Path) -> None:
    results = await analyse_watched(cases, tmp_path, {
        "deep": "SELECT * FROM pages ORDER BY created_at LIMIT 20 OFFSET 50000",
        "deep, sorted": "SELECT * FROM pages ORDER BY body DESC LIMIT 20 OFFSET 5000",
        "shallow": "SELECT * FROM pages ORDER BY created_at DESC LIMIT 20 OFFSET 100",
        "keyset": "SELECT * FROM pages WHERE created_at > '2024-02-04 17:20+00' "
                  "ORDER BY created_at LIMIT 20",
    })
    deep = finding(results["deep"], "large_offset")
    assert deep.table == "public.pages"
    assert number(deep.detail, r"discards ([\d,]+) rows") == 50_000
    assert "to return 20" in deep.detail and "pages_created_at_idx" in deep.detail
    assert "WHERE (created_at) > (the last row's values) ORDER BY created_at LIMIT 20" in deep.fix
    sorted_deep = finding(results["deep, sorted"], "large_offset")
    assert number(sorted_deep.detail, r"discards ([\d,]+) rows") == 5_000
    assert "WHERE (body) < (the last row's values) ORDER BY body DESC" in sorted_deep.fix
    for name in ("shallow", "keyset"):
        assert "large_offset" not in kind_names(results[name]), results[name].findings

    # Rendered wherever findings are: the channel, the report, JSON.
    report = Analysis("db", "2026-01-01T00:00:00+00:00", results=[results["deep"]])
    slack = json.dumps(render.blocks(report))
    assert "*large_offset*" in slack and "keyset pagination" in slack
    assert "| large_offset | public.pages |" in render.markdown(report)
    shown = json.loads(render.as_json(report))["queries"][0]["findings"]
    assert {"kind": "large_offset", "table": "public.pages", "detail": deep.detail,
            "fix": deep.fix} in shown


def _limit_over(scan: dict[str, Any]) -> dict[str, Any]:
    return {"Node Type": "Limit", "Actual Rows": 10.0, "Actual Loops": 1, "Plans": [
        {**scan, "Actual Rows": 5010.0, "Actual Loops": 1}]}


@pytest.mark.parametrize(("scan", "keyset"), [
    # the index's keys the condition holds equal are not part of the order
    ({"Node Type": "Index Scan", "Index Name": "feed_idx", "Relation Name": "feed",
      "Scan Direction": "Forward", "Index Cond": "(account = 7)"},
     "WHERE (created_at) < (the last row's values) ORDER BY created_at DESC LIMIT 10"),
    # read backward: every direction turns
    ({"Node Type": "Index Scan", "Index Name": "feed_idx", "Relation Name": "feed",
      "Scan Direction": "Backward", "Index Cond": "(account = 7)"},
     "WHERE (created_at) > (the last row's values) ORDER BY created_at LIMIT 10"),
    ({"Node Type": "Index Scan", "Index Name": "feed_idx", "Relation Name": "feed",
      "Scan Direction": "Forward"},
     "ORDER BY account, created_at DESC LIMIT 10, each page starting after"),
    ({"Node Type": "Seq Scan", "Relation Name": "feed"},
     "WHERE (sort key) > (the last row's values) ORDER BY sort key LIMIT 10"),
])
def test_large_offset_names_the_order_the_rows_arrive_in(scan: dict[str, Any],
                                                         keyset: str) -> None:
    feed = Table(1, "public", "feed", 100_000, columns=["id", "account", "created_at"],
                 indexes=[Index("feed_idx", ["account", "created_at"], [False, True])])
    run = PlanRun("owner", "given", [], analyzed=True,
                           plan={"Plan": _limit_over(scan)})
    [found] = findings.plan_findings(run, {"feed": feed})
    assert found.kind == "large_offset" and found.table == "public.feed"
    assert "discards 5,000 rows to return 10" in found.detail
    assert keyset in found.fix


# --- heap_fetches -----------------------------------------------------------------------------


async def test_heap_fetches_when_the_visibility_map_is_out_of_date(
        cases: str, tmp_path: Path) -> None:
    queries = {"range": "SELECT k FROM visible WHERE k BETWEEN 1000 AND 20000"}
    write_and_flush(cases, "UPDATE visible SET pad = pad || 'y' WHERE id % 2 = 0")
    stale = (await analyse_watched(cases, tmp_path, queries))["range"]
    assert "Index Only Scan using visible_k_idx on public.visible" in stale.plan_summary
    fetches = finding(stale, "heap_fetches")
    assert fetches.table == "public.visible"
    assert number(fetches.detail, r"went to the table ([\d,]+) times") >= 9_500  # the updated
    assert number(fetches.detail, r"times for ([\d,]+) rows") == 19_001
    assert fetches.fix.startswith("VACUUM public.visible ")
    assert "autovacuum_vacuum_scale_factor" in fetches.fix

    vacuum_until_all_visible(cases, "visible")
    vacuumed = (await analyse_watched(cases, tmp_path, queries))["range"]
    assert "Index Only Scan using visible_k_idx on public.visible" in vacuumed.plan_summary
    assert "heap_fetches" not in kind_names(vacuumed), vacuumed.findings


@pytest.mark.parametrize(("node", "blocks", "need_mb"), [
    ({"Exact Heap Blocks": 100_000, "Lossy Heap Blocks": 50_000, "Actual Loops": 1},
     "150,000 blocks", 10),  # 64 bytes a block: 9.2 MB
    # rescanned under a join: one bitmap per loop
    ({"Exact Heap Blocks": 100_000, "Lossy Heap Blocks": 50_000, "Actual Loops": 3},
     "50,000 blocks", 4),
    # parallel, as PostgreSQL 18 shows it: the leader's blocks, then each worker's; one bitmap
    ({"Exact Heap Blocks": 1_000, "Lossy Heap Blocks": 0.0, "Actual Loops": 3,
      "Parallel Aware": True, "Workers": [
          {"Worker Number": 0, "Exact Heap Blocks": 30_000, "Lossy Heap Blocks": 19_000},
          {"Worker Number": 1, "Exact Heap Blocks": 30_000, "Lossy Heap Blocks": 20_000}]},
     "100,000 blocks", 7),
])
def test_lossy_bitmap_sizes_work_mem_for_one_bitmap(node: dict[str, Any], blocks: str,
                                                   need_mb: int) -> None:
    scan = {"Node Type": "Bitmap Heap Scan", "Relation Name": "wide", "Actual Rows": 10.0,
            "Rows Removed by Index Recheck": 1_000, **node}
    run = PlanRun("owner", "given", [], analyzed=True, plan={"Plan": scan})
    [found] = findings.plan_findings(run, {"wide": Table(1, "public", "wide", 1_000_000)})
    assert found.kind == "lossy_bitmap" and found.table == "public.wide"
    assert f"covers {blocks};" in found.fix
    assert f"work_mem to at least {need_mb}MB" in found.fix
    quiet = {**scan, "Lossy Heap Blocks": 0, "Workers": []}
    assert findings.plan_findings(PlanRun("owner", "given", [], analyzed=True,
                                          plan={"Plan": quiet}), {}) == []
