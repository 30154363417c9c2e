"""`/hotdata analyze` through the signed Slack flow, on the HotDash sample."""

from __future__ import annotations

import psycopg
import pytest

from bot.pgcluster import Cluster
from bot.sample import hotdash as sample
from tests.harness import BotUnderTest


@pytest.fixture
def analysed_bot(hotdash: str, hotdash_bot: BotUnderTest) -> BotUnderTest:
    """The bot pointed at a HotDash copy whose workload has run."""
    with psycopg.connect(hotdash, autocommit=True) as conn:
        sample.run(conn, sample.workload_plan(conn, seed=7, scale_weights=0.05))
    return hotdash_bot


def test_analyze_posts_summary_updates_it_and_uploads_the_report(
        analysed_bot: BotUnderTest) -> None:
    slack = analysed_bot.slack
    reply = analysed_bot.slash("analyze top 3", channel="C0DBOPS")
    assert reply.status == 200
    assert "Analysing the 3 slowest statements" in reply.text
    # the ack came back before any work reached the channel
    assert slack.answered("chat.postMessage") == [] or reply.elapsed_ms < 1000

    [completed] = slack.wait_for("files.completeUploadExternal", timeout=60)
    [posted] = slack.answered("chat.postMessage")
    assert posted.params["channel"] == "C0DBOPS"
    assert "collecting the workload" in posted.params["text"]

    updates = slack.answered("chat.update")
    assert len(updates) >= 2  # progress, then the summary
    assert any("planning" in u.params.get("text", "") or "collecting" in
               u.params.get("text", "") for u in updates[:-1])
    final = updates[-1].params
    assert final["text"].startswith("Query analysis: 3 statements")
    blocks = final["blocks"]
    assert len(blocks) <= 50
    texts = [b["text"]["text"] for b in blocks if b.get("type") == "section"]
    assert all(len(t) <= 3000 for t in texts)
    assert any("notifications" in t and "seq_scan" in t for t in texts)

    [url_call] = slack.answered("files.getUploadURLExternal")
    assert url_call.params["filename"].startswith("query-performance-analysis-")
    [upload] = slack.answered("upload")
    assert upload.params["bytes"] > 1000
    assert completed.params["channel_id"] == "C0DBOPS"
    assert completed.params["thread_ts"] == final["ts"]

    with psycopg.connect(analysed_bot.settings.state_dsn) as conn:
        status, report, markdown = conn.execute(
            "SELECT status, report, markdown FROM hotdata.analyses").fetchone()
    assert status == "done"
    assert len(report["queries"]) == 3
    assert markdown.startswith("# Query performance analysis")


@pytest.mark.parametrize("text", ["analyze top abc", "analyze top 0", "analyze top 10000",
                                  "analyze top 5 now", "analyze 5"])
def test_bad_analyze_arguments_get_usage_and_run_nothing(bot: BotUnderTest, text: str) -> None:
    reply = bot.slash(text)
    assert reply.status == 200
    assert "/hotdata analyze [top N]" in reply.text
    assert ("between 1 and 50" in reply.text) or ("takes `top N`" in reply.text)
    with psycopg.connect(bot.settings.state_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM hotdata.analyses").fetchone() == (0,)
    assert bot.slack.answered("chat.postMessage") == []


def test_second_analysis_in_a_channel_is_told_one_is_running(bot: BotUnderTest) -> None:
    with psycopg.connect(bot.settings.state_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO hotdata.analyses (channel, requested_by) "
                     "VALUES ('C0HOTDATA', 'U0FIRST')")
    reply = bot.slash("analyze")
    [response] = bot.slack.wait_for(f"response_url/{reply.response_key}")
    assert "already running in this channel" in response.params["text"]
    assert "<@U0FIRST>" in response.params["text"]
    assert bot.slack.answered("chat.postMessage") == []
    other = bot.slash("analyze", channel="C0OTHER")
    assert "Analysing" in other.text


def test_unreachable_target_is_reported_without_the_password(bot: BotUnderTest,
                                                              pg: Cluster) -> None:
    bot.settings.state_database_url = bot.settings.database_url
    bot.settings.database_url = (f"postgresql://app:very-secret-pw@127.0.0.1:{pg.port + 1}"
                                 "/app")
    bot.slash("analyze")
    [update] = bot.slack.wait_for("chat.update", timeout=30)
    text = update.params["text"]
    assert "Query analysis failed: cannot connect to the analysis database" in text
    assert "postgresql://app@127.0.0.1" in text
    assert "very-secret-pw" not in str(bot.slack.calls)
    with psycopg.connect(bot.settings.state_dsn) as conn:
        status, error = conn.execute("SELECT status, error FROM hotdata.analyses").fetchone()
    assert status == "failed"
    assert "very-secret-pw" not in error
