"""Helpers for the suites: the template database and the bot served in a thread."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import web

from bot import pgcluster
from bot.app import build_app
from bot.container import Container
from bot.fake_slack import FakeSlack, LoopThread
from bot.server import http_app, start_http, upgrade_state
from bot.settings import Settings
from bot.slack import web_client
from bot.slack_requests import Reply, SlackRequests

TEMPLATE = "hotdata_template"
HOTDASH_TEMPLATE = "hotdash_template"
HOTDASH_SCALE = 0.1
EXTENSIONS = ("pg_stat_statements", "hypopg", "amcheck")


def create_template(cluster: pgcluster.Cluster) -> None:
    """The database every test clones: the extensions hotdata uses, created once."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(cluster.dsn(TEMPLATE), autocommit=True) as conn:
        for name in EXTENSIONS:
            conn.execute(f"CREATE EXTENSION {name}")


def create_hotdash_template(cluster: pgcluster.Cluster) -> None:
    """The HotDash sample at a tenth of its size (20,000 notifications), analysed, as a template."""
    from bot.sample import hotdash

    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {HOTDASH_TEMPLATE} TEMPLATE {TEMPLATE}")
    with psycopg.connect(cluster.dsn(HOTDASH_TEMPLATE), autocommit=True) as conn:
        hotdash.load(conn, scale=HOTDASH_SCALE)


def clone(cluster: pgcluster.Cluster, template: str) -> str:
    """A new database copied from `template`; its name."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
    return name


def drop(cluster: pgcluster.Cluster, name: str) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings_for(url: str, **extra: Any) -> Settings:
    """Settings for a target URL, read from nothing but the arguments (no environment file)."""
    return Settings(_env_file=None, database_url=url, **extra)  # type: ignore[call-arg]


def watched_file(directory: Path, queries: list[dict[str, Any]]) -> Path:
    """A HOTDATA_WATCHED_QUERIES file holding `queries` ([[query]] tables)."""
    lines = []
    for entry in queries:
        lines.append("[[query]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
        lines.append("")
    path = directory / "watched.toml"
    path.write_text("\n".join(lines))
    return path


class BotUnderTest:
    """`hotdata serve`'s HTTP app in its own event loop thread, with signed-request helpers."""

    def __init__(self, settings: Settings, slack: FakeSlack) -> None:
        self.settings = settings
        self.slack = slack
        self.container = Container(settings, web_client(settings))
        self._thread = LoopThread("hotdata-under-test")
        self._runner: web.AppRunner | None = None
        self.requests: SlackRequests | None = None

    def start(self) -> BotUnderTest:
        self._thread.run(upgrade_state(self.settings))
        app = build_app(self.settings, self.container)
        self._runner, port = self._thread.run(
            start_http(http_app(app, self.container), "127.0.0.1", 0))
        secret = self.settings.slack_signing_secret
        assert secret is not None
        self.requests = SlackRequests(f"http://127.0.0.1:{port}/slack/events",
                                      secret.get_secret_value(), self.slack.url)
        self.port = port
        return self

    def run(self, work: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the bot's loop (for service calls beside the Slack flow)."""
        return self._thread.run(work, timeout)

    def slash(self, text: str, **kwargs: Any) -> Reply:
        assert self.requests is not None
        return self.requests.slash(text, **kwargs)

    def stop(self) -> None:
        if self._runner is not None:
            self._thread.run(self._runner.cleanup())
        self._thread.run(self.container.pools.close())
        self._thread.close()
