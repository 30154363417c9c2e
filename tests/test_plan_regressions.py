"""Plan regressions on a real PostgreSQL: each stored analysis keeps its plan shapes, and the
next one names a statement whose plan changed and got slower, with the likely cause (an index
dropped outside hotdata or by an index migration, a planner setting changed); an unchanged
plan stays quiet; `/hotdata analyze compare` shows the last two analyses side by side."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from bot import migrate, tools
from bot.advisor.pipeline import analyze
from bot.analysis import plan_history
from bot.analysis.model import Analysis, Finding
from bot.db import connect
from bot.flows.analysis import record
from bot.proposals import store
from bot.render import report as render_report
from bot.reports import report as reports
from bot.settings import Settings
from tests.harness import BotUnderTest, settings_for

ROWS = 400_000
INDEX = "events_account_idx"
QUERY = "SELECT id, payload FROM public.events WHERE account = %s"
PATH_BEFORE = rf"(Index Scan using {INDEX}|Bitmap Heap Scan \({INDEX}\))"


def build(url: str) -> None:
    """A table whose query is fast through an index and slow without it; its workload run."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.events (id bigint PRIMARY KEY, account int NOT NULL, "
                     "payload text NOT NULL)")
        conn.execute("INSERT INTO public.events SELECT i, i %% 40000, repeat(md5(i::text), 2) "
                     "FROM generate_series(1, %s) i", (ROWS,))
        conn.execute(f"CREATE INDEX {INDEX} ON public.events (account)")
        conn.execute("VACUUM ANALYZE public.events")
        conn.execute("SELECT pg_stat_statements_reset()")
        run(conn)


def run(conn: psycopg.Connection[Any]) -> None:
    for account in range(0, 40000, 400):
        conn.execute(QUERY, (account,))


def analysed(settings: Settings) -> Analysis:
    """An analysis of the target, stored (with its shapes) as `/hotdata propose` stores it."""
    async def go() -> Analysis:
        async with connect(settings, "state") as conn:
            await migrate.upgrade(conn)
        analysis = await analyze(settings, top=3)
        await record(settings, analysis, "U0ENGINEER")
        return analysis
    return asyncio.run(go())


def regressions(analysis: Analysis) -> list[Finding]:
    return [f for r in analysis.results for f in r.findings if f.kind == "plan_regression"]


@pytest.fixture
def events(database: str) -> Settings:
    build(database)
    return settings_for(database)


def test_an_unchanged_plan_is_quiet_and_a_dropped_index_is_named(events: Settings) -> None:
    first = analysed(events)
    assert regressions(first) == []  # nothing to compare with
    again = analysed(events)
    assert regressions(again) == []  # the same plan
    with psycopg.connect(events.database_url, autocommit=True, row_factory=dict_row) as conn:
        [kept] = conn.execute("SELECT count(DISTINCT analysis_id) AS n, count(*) AS shapes "
                              "FROM hotdata.plan_shapes").fetchall()
        assert kept["n"] == 2 and kept["shapes"] >= 2
        conn.execute(f"DROP INDEX public.{INDEX}")
        run(conn)

    [finding] = regressions(analysed(events))
    assert finding.table == "public.events"
    assert re.search(rf"public\.events: {PATH_BEFORE} → (Parallel )?Seq Scan", finding.detail)
    assert f"index {INDEX} was dropped outside hotdata" in finding.detail
    assert f"recreate {INDEX}" in finding.fix
    slower = float(re.search(r"got ([\d.]+) times slower", finding.detail)[1])  # type: ignore[index]
    assert slower >= 2
    # the stored analysis carries it too (JSON, markdown)
    with psycopg.connect(events.database_url, row_factory=dict_row) as conn:
        [last] = conn.execute("SELECT report, markdown FROM hotdata.analyses "
                              "ORDER BY id DESC LIMIT 1").fetchall()
    kinds = [f["kind"] for q in last["report"]["queries"] for f in q["findings"]]
    assert "plan_regression" in kinds and "plan_regression" in last["markdown"]
    # and the two-hourly report lists it
    report = asyncio.run(reports.build(events, timedelta(hours=2)))
    assert [r["table"] for r in report.plan_regressions] == ["public.events"]
    shown = str(render_report.blocks(report))
    assert "*Plan regressions found by analyses*" in shown and INDEX in shown
    assert "Plan regression in analysis #3" in render_report.markdown(report)


def test_an_index_dropped_by_an_index_migration_names_the_migration(events: Settings) -> None:
    analysed(events)

    async def roll_back() -> int:
        """What hotdata's applied rollback leaves: the proposal, its approval and apply."""
        sql = f"DROP INDEX CONCURRENTLY IF EXISTS public.{INDEX}"
        async with connect(events, "state") as conn:
            proposal = await store.create(conn, {  # type: ignore[typeddict-item]
                "action": "drop", "table": "public.events", "index": INDEX, "sql": sql,
                "columns": ["account"]}, None, "U0ENGINEER", "C0HOTDATA")
            assert proposal is not None
            await store.decide(conn, proposal["id"], "approved", "U0BOSS")
            await conn.execute(sql)
            await store.mark(conn, proposal["id"], "applied", {})
            await store.audit(conn, "hotdata", "applied", proposal["id"], sql, "applied")
            return proposal["id"]

    migration = asyncio.run(roll_back())
    [finding] = regressions(analysed(events))
    assert (f"index {INDEX} was dropped by index migration #{migration} (approved by "
            "<@U0BOSS>") in finding.detail
    assert f"roll back #{migration}" in finding.fix


def test_a_changed_planner_setting_is_named(events: Settings) -> None:
    analysed(events)
    with psycopg.connect(events.database_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        for setting in ("enable_indexscan", "enable_bitmapscan"):
            conn.execute(f'ALTER DATABASE "{name}" SET {setting} = off')
    [finding] = regressions(analysed(events))
    assert "enable_bitmapscan changed from on to off" in finding.detail
    assert "enable_indexscan changed from on to off" in finding.detail
    assert "restore enable_bitmapscan, enable_indexscan" in finding.fix
    # the next analysis compares with this one: the same (slow) plan is not a regression again
    assert regressions(analysed(events)) == []


def test_shapes_name_each_relations_path_and_the_join_order() -> None:
    def node(kind: str, relation: str = "", index: str = "", estimated: float = 10,
             actual: float | None = 10) -> dict[str, Any]:
        return {"type": kind, "relation": relation, "index": index, "estimated": estimated,
                "actual": actual}
    before = [node("Hash Join"), node("Seq Scan", "public.a"),
              node("Bitmap Heap Scan", "public.b"), node("Bitmap Index Scan", index="b_x")]
    after = [node("Nested Loop"), node("Index Scan", "public.b", "b_y", 1, 5000),
             node("Seq Scan", "public.a")]
    assert plan_history.access_paths(before) == {"public.a": "Seq Scan",
                                                 "public.b": "Bitmap Heap Scan (b_x)"}
    assert plan_history.changes(before, after) == [
        "public.b: Bitmap Heap Scan (b_x) → Index Scan using b_y",
        "joins: Hash Join → Nested Loop",
        "join order: public.a, public.b → public.b, public.a",
        "public.b: estimated 1 rows, got 5,000"]


def test_analyze_compare_shows_the_last_two_analyses(bot: BotUnderTest) -> None:
    build(bot.settings.database_url)
    reply = bot.slash("analyze compare")
    [answer] = bot.slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
    assert answer.params["text"].startswith("Nothing to compare yet")

    for step in range(2):
        if step:
            with psycopg.connect(bot.settings.database_url, autocommit=True) as conn:
                conn.execute(f"DROP INDEX public.{INDEX}")
                run(conn)
        done = len(bot.slack.answered("files.completeUploadExternal"))
        assert bot.slash("analyze top 3").status == 200
        bot.slack.wait_for("files.completeUploadExternal", count=done + 1, timeout=120)
    summary = bot.slack.answered("chat.update")[-1].params
    assert "plan_regression" in str(summary["blocks"])

    reply = bot.slash("analyze compare")
    assert reply.status == 200 and "Comparing the last two analyses" in reply.text
    [answer] = bot.slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
    text = answer.params["text"]
    assert re.match(r"\*Analysis #1\* \(.*\) → \*#2\* \(.*\): \d+ statement plan\(s\) in both, "
                    r"1 changed, 1 of them at least 2 times as slow", text), text
    assert re.search(rf"what changed: public\.events: {PATH_BEFORE} → (Parallel )?Seq Scan",
                     text)
    assert "`SELECT id, payload FROM public.events WHERE account = $1` (owner)" in text

    # the same from a terminal
    done = subprocess.run([str(Path(sys.executable).parent / "hotdata"), "analyze", "--compare",
                           "--dsn", bot.settings.database_url], env=tools.clean_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == text
