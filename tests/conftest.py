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
    drop_copies,
    give_scratch_copy,
    scratch_copy,
)

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-0000-test-token"


@pytest.fixture(scope="session")
def pg() -> Iterator[pgcluster.Cluster]:
    """One throwaway cluster for the whole session (pg_stat_statements preloaded, HypoPG where
    the server has it)."""
    cluster = pgcluster.create()
    try:
        create_template(cluster)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(autouse=True)
def scratch_copies() -> Iterator[None]:
    """The scratch copies a test's analyses were given (tests/harness.py: advised), dropped
    after it."""
    try:
        yield
    finally:
        drop_copies()


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
    """A fresh copy of the HotDash sample with empty pg_stat_statements for it; its URL. On a
    server without HypoPG a second copy of the sample is its scratch copy (harness.advised), for
    the advisor to build candidates on."""
    name = clone(pg, hotdash_template)
    try:
        url = pg.url(name)
        give_scratch_copy(url, hotdash_template)
        yield url
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
    non-superuser role a team connects as). Dropped afterwards. On a server without HypoPG a
    second copy is its scratch copy (harness.advised)."""
    name = supabase.clone(supabase_pg)
    try:
        url = supabase.url(supabase_pg, name)
        give_scratch_copy(url, supabase.TEMPLATE)
        yield url
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
    """The bot, as `bot`, but pointed at a copy of the HotDash sample (and, on a server without
    HypoPG, at its scratch copy for the advisor)."""
    settings.database_url = hotdash
    settings.scratch_database_url = scratch_copy(hotdash)
    running = BotUnderTest(settings, slack).start()
    try:
        yield running
    finally:
        running.stop()
