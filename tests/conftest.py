"""Fixtures every suite uses: a real throwaway PostgreSQL, a fake Slack Web API, the real bot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot import pgcluster
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.settings import Settings
from tests import supabase
from tests.harness import (
    HOTDASH_TEMPLATE,
    TEMPLATE,
    BotUnderTest,
    clone,
    create_hotdash_template,
    create_template,
    drop,
)

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-0000-test-token"


@pytest.fixture(scope="session")
def pg() -> Iterator[pgcluster.Cluster]:
    """One throwaway cluster for the whole session (pg_stat_statements preloaded, HypoPG)."""
    cluster = pgcluster.create()
    try:
        create_template(cluster)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def database(pg: pgcluster.Cluster) -> Iterator[str]:
    """A fresh database cloned from the template; its URL. Dropped afterwards."""
    name = clone(pg, TEMPLATE)
    try:
        yield pg.url(name)
    finally:
        drop(pg, name)


@pytest.fixture(scope="session")
def hotdash_template(pg: pgcluster.Cluster) -> str:
    """The HotDash sample (scale 0.1), loaded once per session."""
    create_hotdash_template(pg)
    return HOTDASH_TEMPLATE


@pytest.fixture
def hotdash(pg: pgcluster.Cluster, hotdash_template: str) -> Iterator[str]:
    """A fresh copy of the HotDash sample with empty pg_stat_statements for it; its URL."""
    name = clone(pg, hotdash_template)
    try:
        yield pg.url(name)
    finally:
        drop(pg, name)


@pytest.fixture(scope="session")
def supabase_pg() -> Iterator[pgcluster.Cluster]:
    """A cluster laid out as a hosted Supabase project (see tests/supabase.py)."""
    cluster = supabase.create_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def supabase_db(supabase_pg: pgcluster.Cluster) -> Iterator[str]:
    """A fresh Supabase-shaped database with the HotDash sample; its URL as `postgres` (the
    non-superuser role a team connects as). Dropped afterwards."""
    name = supabase.clone(supabase_pg)
    try:
        yield supabase.url(supabase_pg, name)
    finally:
        drop(supabase_pg, name)


@pytest.fixture(scope="session")
def fake_slack_server() -> Iterator[FakeSlackServer]:
    server = FakeSlackServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slack(fake_slack_server: FakeSlackServer) -> FakeSlack:
    """The fake Slack Web API, emptied for this test."""
    fake_slack_server.slack.reset()
    return fake_slack_server.slack


@pytest.fixture
def settings(database: str, fake_slack_server: FakeSlackServer, slack: FakeSlack) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fake_slack_server.api_url,
        channel="C0HOTDATA",
        manager_ids=["U0MANAGER"],
    )


@pytest.fixture
def bot(settings: Settings, slack: FakeSlack) -> Iterator[BotUnderTest]:
    """The real app served over HTTP on 127.0.0.1, talking to the fake Slack."""
    running = BotUnderTest(settings, slack).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def hotdash_bot(hotdash: str, settings: Settings, slack: FakeSlack) -> Iterator[BotUnderTest]:
    """The bot, as `bot`, but pointed at a copy of the HotDash sample."""
    settings.database_url = hotdash
    running = BotUnderTest(settings, slack).start()
    try:
        yield running
    finally:
        running.stop()
