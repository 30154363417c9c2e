"""Fixtures every suite uses: a real throwaway PostgreSQL, a fake Slack Web API, the real bot."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from bot import pgcluster
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.settings import Settings
from tests.harness import TEMPLATE, BotUnderTest, create_template

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
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    try:
        yield pg.url(name)
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
