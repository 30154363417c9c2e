"""The periodic report: snapshot deltas (across resets), the report's content and Block Kit
limits, its chart, and its delivery to Slack (upload, 429 retry, pacing), from the Slack
command and the CLI. A real PostgreSQL with pg_stat_statements; the fake Slack Web API."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bot import migrate, pgcluster
from bot.catalog import MARK
from bot.container import Container
from bot.db import connect
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.flows import reports as delivery
from bot.proposals import binding
from bot.render import report as render
from bot.reports import snapshots
from bot.reports.report import Report, build, chart
from bot.sample import hotdash
from bot.settings import Settings
from bot.slack import web_client
from tests.conftest import BOT_TOKEN, SIGNING_SECRET
from tests.harness import TEMPLATE, BotUnderTest, clone, drop

HOTDATA = Path(sys.executable).parent / "hotdata"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHANNEL = "C0REPORTS"
TAGGED_CALLS_SQL = ("SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements "
                    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) "
                    "AND query LIKE '%%' || %s || '%%'")

DIGEST = binding.digest("CREATE INDEX …")  # a proposal row is bound to its statement


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def state_db(pg: pgcluster.Cluster) -> Iterator[str]:
    """hotdata's state in a database of its own, so the target's pg_stat_statements holds
    only what a test ran there (and hotdata's tagged reads)."""
    name = clone(pg, TEMPLATE)
    try:
        yield pg.url(name)
    finally:
        drop(pg, name)


def make_settings(target: str, state: str, api_url: str, **extra: Any) -> Settings:
    return Settings(_env_file=None,  # type: ignore[call-arg]
                    database_url=target, state_database_url=state,
                    slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                    slack_api_url=api_url, channel=CHANNEL, **extra)


@pytest.fixture
async def split(database: str, state_db: str, fake_slack_server: FakeSlackServer,
                slack: FakeSlack) -> AsyncIterator[Settings]:
    """Settings for an empty target (pg_stat_statements) and a separate, upgraded state DB."""
    settings = make_settings(database, state_db, fake_slack_server.api_url)
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
    yield settings


@pytest.fixture
async def split_hotdash(hotdash: str, state_db: str, fake_slack_server: FakeSlackServer,
                        slack: FakeSlack) -> AsyncIterator[Settings]:
    settings = make_settings(hotdash, state_db, fake_slack_server.api_url)
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
    yield settings


# --- helpers ---------------------------------------------------------------------------------

def run(url: str, statement: str, params: tuple[Any, ...] = (), times: int = 1) -> None:
    """Run `statement` `times` times on its own autocommit connection (no BEGIN of ours)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(times):
            cur = conn.execute(statement, params)
            if cur.description is not None:
                cur.fetchall()


def state(settings: Settings, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with psycopg.connect(settings.state_dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def backdate(settings: Settings, snapshot: int, ago: timedelta) -> None:
    state(settings, "UPDATE hotdata.snapshots SET taken_at = now() - %s WHERE id = %s",
          (ago, snapshot))


async def snapshot_row(settings: Settings, snapshot: int) -> dict[str, Any]:
    async with connect(settings, "state") as conn:
        cur = await conn.execute("SELECT * FROM hotdata.snapshots WHERE id = %s", (snapshot,))
        row = await cur.fetchone()
    assert row is not None
    return row


async def deltas_between(settings: Settings, first: int, second: int) -> dict[str, int]:
    """{query text: calls} of what ran between two snapshots."""
    start, end = await snapshot_row(settings, first), await snapshot_row(settings, second)
    async with connect(settings, "state") as conn:
        found = await snapshots.deltas(conn, start, end)
    return {d.query: d.calls for d in found}


async def take(settings: Settings) -> int:
    snapshot = await snapshots.take(settings)
    assert snapshot is not None
    return snapshot


def texts(value: Any) -> Iterator[str]:
    """Every text string of a Block Kit structure."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


def assert_block_kit_limits(blocks: list[dict[str, Any]]) -> None:
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
    for text in texts(blocks):
        assert 0 < len(text) <= 3000, text[:200]


def tagged_calls(settings: Settings) -> int:
    dbname = settings.database_url.rsplit("/", 1)[1]
    with psycopg.connect(settings.state_dsn, autocommit=True) as conn:
        row = conn.execute(TAGGED_CALLS_SQL, (dbname, MARK)).fetchone()
    assert row is not None
    return int(row[0])


A = "SELECT count(*) FROM reading WHERE id = %s"
B = "SELECT id FROM reading WHERE id > %s ORDER BY id LIMIT 5"
C = "SELECT max(id) FROM reading WHERE id < %s"
A_TEXT = "SELECT count(*) FROM reading WHERE id = $1"
B_TEXT = "SELECT id FROM reading WHERE id > $1 ORDER BY id LIMIT $2"
C_TEXT = "SELECT max(id) FROM reading WHERE id < $1"


def reading_table(url: str) -> None:
    run(url, "CREATE TABLE reading (id int PRIMARY KEY)")
    run(url, "INSERT INTO reading SELECT generate_series(1, 100)")


# --- deltas ----------------------------------------------------------------------------------

async def test_deltas_are_exact_differences_without_a_reset(split: Settings) -> None:
    reading_table(split.database_url)
    run(split.database_url, A, (1,), times=5)
    run(split.database_url, B, (1,), times=2)
    first = await take(split)
    run(split.database_url, A, (2,), times=3)
    run(split.database_url, C, (50,), times=4)
    second = await take(split)

    assert await deltas_between(split, first, second) == {A_TEXT: 3, C_TEXT: 4}
    # The snapshots hold the cumulative counters the differences come from.
    rows = dict(state(split, "SELECT snapshot_id, calls FROM hotdata.snapshot_statements "
                             "WHERE query = %s", (A_TEXT,)))
    assert rows == {first: 5, second: 8}


async def test_deltas_after_a_reset_count_only_what_ran_after_it(split: Settings) -> None:
    reading_table(split.database_url)
    run(split.database_url, A, (1,), times=5)
    run(split.database_url, B, (1,), times=2)
    first = await take(split)
    # From the state database, so the reset call itself is not a statement of the target.
    run(split.state_dsn, "SELECT pg_stat_statements_reset()")
    run(split.database_url, B, (7,), times=3)
    run(split.database_url, C, (9,), times=1)
    second = await take(split)

    start, end = await snapshot_row(split, first), await snapshot_row(split, second)
    assert start["statements_reset"] != end["statements_reset"]
    # A ran only before the reset; B's 3 calls after it are fewer than its 2 + 3 in total
    # would suggest without the reset (and a naive difference would give 1).
    assert await deltas_between(split, first, second) == {B_TEXT: 3, C_TEXT: 1}


async def test_a_statement_whose_calls_went_down_counts_from_zero(split: Settings) -> None:
    reading_table(split.database_url)
    run(split.database_url, A, (1,), times=5)
    run(split.database_url, B, (1,), times=4)
    first = await take(split)
    # Only A's entry is reset (as an eviction would): pg_stat_statements_info.stats_reset
    # stays, so the snapshots' epochs are equal and only A's counter went down.
    with psycopg.connect(split.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset(0, 0, queryid) FROM pg_stat_statements "
                     "WHERE query = %s", (A_TEXT,)).fetchall()
    run(split.database_url, A, (1,), times=2)
    run(split.database_url, B, (1,), times=1)
    second = await take(split)

    start, end = await snapshot_row(split, first), await snapshot_row(split, second)
    assert (start["statements_reset"], start["server_started"]) == (
        end["statements_reset"], end["server_started"])
    found = await deltas_between(split, first, second)
    assert found[A_TEXT] == 2
    assert found[B_TEXT] == 1


async def test_without_pg_stat_statements_there_is_no_snapshot(
        pg: pgcluster.Cluster, state_db: str, fake_slack_server: FakeSlackServer) -> None:
    name = clone(pg, "template0")  # no extension at all
    try:
        settings = make_settings(pg.url(name), state_db, fake_slack_server.api_url)
        async with connect(settings, "state") as conn:
            await migrate.upgrade(conn)
        assert await snapshots.take(settings) is None
        report = await build(settings, timedelta(hours=2))
        assert report.top == []
        assert any("pg_stat_statements is not available" in n for n in report.notes)
        assert_block_kit_limits(render.blocks(report))
    finally:
        drop(pg, name)


# --- the report's content --------------------------------------------------------------------

SLOWER = "SELECT pg_sleep(%s)"
FASTER = "SELECT 1 FROM pg_sleep(%s)"
STEADY = "SELECT count(*) FROM pg_sleep(%s)"
NEW = "SELECT now() FROM pg_sleep(%s)"


async def test_statements_are_new_slower_or_faster_against_the_previous_window(
        split: Settings) -> None:
    url = split.database_url
    s0 = await take(split)
    run(url, SLOWER, (0.002,), times=3)  # the previous window
    run(url, FASTER, (0.03,), times=3)
    run(url, STEADY, (0.04,), times=3)
    s1 = await take(split)
    run(url, SLOWER, (0.03,), times=3)  # this window
    run(url, FASTER, (0.002,), times=3)
    run(url, STEADY, (0.04,), times=3)
    run(url, NEW, (0.001,), times=2)
    backdate(split, s0, timedelta(hours=2, minutes=5))
    backdate(split, s1, timedelta(hours=1, minutes=1))

    report = await build(split, timedelta(hours=1))

    assert report.window_start is not None
    changes = {line.delta.query: line for line in report.top}
    assert set(changes) == {"SELECT pg_sleep($1)", "SELECT $2 FROM pg_sleep($1)",
                            "SELECT count(*) FROM pg_sleep($1)", "SELECT now() FROM pg_sleep($1)"}
    slower, faster = changes["SELECT pg_sleep($1)"], changes["SELECT $2 FROM pg_sleep($1)"]
    steady, new = (changes["SELECT count(*) FROM pg_sleep($1)"],
                   changes["SELECT now() FROM pg_sleep($1)"])
    assert (slower.change, faster.change, steady.change, new.change) == (
        "slower", "faster", "", "new")
    assert slower.delta.calls == faster.delta.calls == steady.delta.calls == 3
    assert new.delta.calls == 2 and new.previous_mean_ms is None
    assert slower.previous_mean_ms is not None and 2 <= slower.previous_mean_ms < 10
    assert slower.delta.mean_ms >= 30
    text = "\n".join(render.lines(report))
    assert ":small_red_triangle: slower (was" in text
    assert ":small_red_triangle_down: faster (was" in text
    assert ":new: new" in text


async def test_realistic_window_renders_inside_block_kit_limits(split_hotdash: Settings,
                                                                slack: FakeSlack) -> None:
    settings = split_hotdash
    url = settings.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        reads = hotdash.workload_plan(conn, reads=200)
        writes = hotdash.write_plan(conn, scale_weights=0.1)
    taken = []
    for part in range(4):  # several snapshots over the last hours, work between them
        taken.append(await take(settings))
        with psycopg.connect(url, autocommit=True) as conn:
            hotdash.run(conn, reads[part * 50:(part + 1) * 50])
            hotdash.run(conn, writes[part * 10:(part + 1) * 10])
        run(url, "SELECT pg_sleep(%s)", (0.004,), times=2)
    for n, snapshot in enumerate(taken):
        backdate(settings, snapshot, timedelta(minutes=30 * (len(taken) - n) + 1))
    sleep_statement = {"text": "SELECT pg_sleep($1)", "values": ["0.004"]}
    state(settings,
          "INSERT INTO hotdata.proposals (table_name, index_name, sql, sql_sha256, status, "
          "evidence, created_at) VALUES ('public.notifications', "
          "'notifications_user_id_read_idx', 'CREATE INDEX CONCURRENTLY IF NOT EXISTS …', "
          f"'{DIGEST}', 'pending', '{{}}', now() - interval '3 hours')")
    applied = ("INSERT INTO hotdata.proposals (table_name, index_name, sql, sql_sha256, "
               "status, evidence, result, updated_at) VALUES ('public.decisions', %s, "
               f"'CREATE INDEX …', '{DIGEST}', 'applied', %s, %s, now() - %s)")
    # Applied in this window (listed), and applied before it (its statement is judged).
    state(settings, applied, ("decisions_assignee_pending_idx", Jsonb({}),
                              Jsonb({"before_ms": 12.5, "after_ms": 0.2}),
                              timedelta(minutes=20)))
    state(settings, applied, ("sleepy_idx", Jsonb({"statements": [sleep_statement]}),
                              Jsonb({"before_ms": 9.0, "after_ms": 0.2}), timedelta(hours=5)))
    state(settings, "INSERT INTO hotdata.drills (source, status, finished_at, rto_seconds, "
                    "rpo_seconds) VALUES ('dump', 'passed', now() - interval '5 hours', 42.5, 61)")

    report = await build(settings, timedelta(hours=2))

    assert not report.quiet
    assert 5 <= len(report.top) <= 10
    assert [p["index_name"] for p in report.pending] == ["notifications_user_id_read_idx"]
    assert [a["index_name"] for a in report.applied] == ["decisions_assignee_pending_idx"]
    assert [(r["index"], r["query"]) for r in report.regressions] == [
        ("sleepy_idx", "SELECT pg_sleep($1)")]
    assert report.last_drill is not None and report.last_drill["status"] == "passed"
    assert report.health["max_connections"] == 200
    blocks = render.blocks(report)
    assert_block_kit_limits(blocks)
    body = "\n".join(texts(blocks))
    for expected in ("Busiest statements", "notifications_user_id_read_idx",
                     "decisions_assignee_pending_idx", "12.5 ms → 0.2 ms", "`sleepy_idx`",
                     "Regressed after a migration", "passed, RTO 42.5 s, RPO 61.0 s",
                     "FROM notifications"):
        assert expected in body
    png = chart(report)
    assert png is not None and png.startswith(PNG_MAGIC)
    assert set(report.series) <= {line.delta.queryid for line in report.top}
    # The two-hour window starts at the snapshot taken at least two hours ago.
    assert report.window_start is not None
    assert report.window_end - report.window_start >= timedelta(hours=2)

    # A pile of pending proposals and missed slots still fits: each text is cut at 3,000.
    for n in range(150):
        state(settings, "INSERT INTO hotdata.proposals (table_name, index_name, sql, "
                        "sql_sha256, status) VALUES ('public.notifications', %s, "
                        f"'CREATE INDEX …', '{DIGEST}', 'pending')",
              (f"notifications_a_rather_long_index_name_number_{n:03d}_idx",))
        state(settings, "INSERT INTO hotdata.job_runs (job, scheduled_for, status) VALUES "
                        "('report', now() - %s, 'missed')", (timedelta(minutes=n + 1),))
    crowded = await build(settings, timedelta(hours=2))
    assert len(crowded.pending) == 151
    assert len(crowded.missed) == 150
    assert_block_kit_limits(render.blocks(crowded))

    # Published: the blocks in the channel, the chart uploaded into the report's thread.
    container = Container(settings, web_client(settings))
    await delivery.publish(container, report, CHANNEL)
    posted = slack.wait_for("chat.postMessage")
    assert [c.params["channel"] for c in posted] == [CHANNEL]
    assert posted[0].params["blocks"] == json.loads(json.dumps(blocks, default=str))
    slack.wait_for("files.getUploadURLExternal")
    completed = slack.wait_for("files.completeUploadExternal")[0].params
    assert completed["channel_id"] == CHANNEL
    assert re.fullmatch(r"\d+\.\d{6}", completed["thread_ts"])  # the report's ts
    uploaded = slack.wait_for("upload")
    assert slack.uploads[uploaded[0].params["file_id"]].startswith(PNG_MAGIC)


async def test_an_empty_window_is_a_short_quiet_report(split: Settings, slack: FakeSlack) -> None:
    reading_table(split.database_url)
    run(split.database_url, A, (1,), times=5)  # before the window: not this report's
    first = await take(split)
    backdate(split, first, timedelta(hours=2, minutes=1))

    report = await build(split, timedelta(hours=2))

    assert report.quiet
    assert report.top == []
    blocks = render.blocks(report)
    assert_block_kit_limits(blocks)
    assert len(blocks) == 1 and blocks[0]["type"] == "section"
    text = blocks[0]["text"]["text"]
    assert "quiet window" in text and "no restore drill yet" in text and len(text) < 500
    assert render.headline(report) == "hotdata report: a quiet window, nothing to report"
    assert chart(report) is None

    container = Container(split, web_client(split))
    await delivery.publish(container, report, CHANNEL)
    posted = slack.wait_for("chat.postMessage")
    assert len(posted) == 1 and "quiet window" in posted[0].params["text"]
    assert slack.attempts("files.getUploadURLExternal") == []

    # A missed slot is never hidden in a quiet report.
    state(split, "INSERT INTO hotdata.job_runs (job, scheduled_for, status) VALUES "
                 "('report', now() - interval '90 minutes', 'missed')")
    missed = await build(split, timedelta(hours=2))
    assert not missed.quiet
    assert "*Missed slots*\n• report at" in "\n".join(texts(render.blocks(missed)))


async def test_snapshots_older_than_the_retention_are_deleted(split: Settings) -> None:
    kept, old = await take(split), await take(split)
    backdate(split, kept, timedelta(minutes=50))
    backdate(split, old, timedelta(minutes=70))
    short = split.model_copy(update={"snapshot_retention_hours": 1.0})
    newest = await take(short)
    ids = [r[0] for r in state(split, "SELECT id FROM hotdata.snapshots ORDER BY id")]
    assert ids == [kept, newest]
    assert state(split, "SELECT DISTINCT snapshot_id FROM hotdata.snapshot_statements "
                        "WHERE snapshot_id = %s", (old,)) == []


async def test_queries_to_target_is_what_the_target_received(split: Settings) -> None:
    await take(split)
    before = tagged_calls(split)
    report = await build(split, timedelta(hours=2))
    assert tagged_calls(split) - before == report.queries_to_target == 9


# --- delivery --------------------------------------------------------------------------------

def quiet_report() -> Report:
    from datetime import UTC, datetime

    return Report(window_start=None, window_end=datetime.now(UTC),
                  health={"connections": 3, "max_connections": 200, "cache_hit_pct": 99.5,
                          "longest_query_s": None, "blocked": 0, "xid_age": 1234})


async def test_a_429_is_retried_and_the_report_arrives_once(split: Settings,
                                                            slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", 429, times=1, retry_after=1)
    container = Container(split, web_client(split))
    await delivery.publish(container, quiet_report(), CHANNEL)
    attempts = slack.attempts("chat.postMessage")
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 0.9  # Retry-After: 1
    assert len(slack.answered("chat.postMessage")) == 1


async def test_posts_to_one_channel_are_a_second_apart(split: Settings,
                                                       slack: FakeSlack) -> None:
    container = Container(split, web_client(split))
    for _ in range(3):
        await delivery.publish(container, quiet_report(), CHANNEL)
    posted = slack.answered("chat.postMessage")
    assert len(posted) == 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(posted)]
    assert all(gap >= 0.95 for gap in gaps), gaps


# --- from Slack and the CLI ------------------------------------------------------------------

def test_slash_report_posts_the_report_in_the_channel(bot: BotUnderTest,
                                                      slack: FakeSlack) -> None:
    reply = bot.slash("report", channel="C0ASKED")
    assert reply.status == 200
    assert "Building the report" in reply.text
    posted = slack.wait_for("chat.postMessage", timeout=30)
    assert posted[0].params["channel"] == "C0ASKED"
    assert posted[0].params["text"].startswith("hotdata report")
    assert_block_kit_limits(posted[0].params["blocks"])
    ran = bot.run(_snapshot_count(bot.settings))
    assert ran == 1


async def _snapshot_count(settings: Settings) -> int:
    async with connect(settings, "state") as conn:
        row = await (await conn.execute("SELECT count(*) AS n FROM hotdata.snapshots")).fetchone()
    assert row is not None
    return int(row["n"])


def test_cli_report_json(database: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HOTDATA_", "SLACK_"))}
    env["HOTDATA_DATABASE_URL"] = database
    done = subprocess.run([str(HOTDATA), "report", "--format", "json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["headline"].startswith("hotdata report")
    assert data["queries_to_target"] == 9
    assert_block_kit_limits(data["blocks"])


def test_hotdatas_own_state_queries_are_not_the_applications() -> None:
    from bot import sqltext

    assert sqltext.hotdata_only("UPDATE hotdata.job_runs SET status = $1 WHERE job = $2")
    assert sqltext.hotdata_only("INSERT INTO hotdata.heartbeat (id, at) VALUES ($1, $2)")
    assert not sqltext.hotdata_only("SELECT * FROM notifications WHERE user_id = $1")
    assert not sqltext.hotdata_only("SELECT pg_sleep($1)")  # no table: an RPC, kept
    assert not sqltext.hotdata_only(
        "SELECT * FROM hotdata.proposals p JOIN public.profiles u ON u.id = p.id")
