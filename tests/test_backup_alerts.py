"""Backups that stopped, noticed without a drill: the scheduled snapshot checks the newest dump's
age in the backup directory and WAL archiving on a real cluster whose `archive_command` fails;
each problem is posted once across several snapshots, and once when it is over, also with two
replicas checking at once. Real PostgreSQL clusters and the fake Slack Web API."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot import pgcluster
from bot.container import Container
from bot.db import connect
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.flows import reports
from bot.migrate import upgrade
from bot.render import report as render
from bot.reports.report import build
from bot.settings import Settings
from bot.slack import web_client
from tests.conftest import BOT_TOKEN
from tests.harness import settings_for

CHANNEL = "C0HOTDATA"
SNAPSHOTS = 3  # per state: however many run, one message


def dump(directory: Path, name: str, age: timedelta) -> Path:
    """A custom-format dump file (its contents are never read here) written `age` ago."""
    path = directory / name
    path.write_bytes(b"PGDMP")
    moment = time.time() - age.total_seconds()
    os.utime(path, (moment, moment))
    return path


def alerts(slack: FakeSlack) -> list[str]:
    return [c.params["text"] for c in slack.answered("chat.postMessage")
            if c.params.get("channel") == CHANNEL]


async def snapshots(settings: Settings, times: int = SNAPSHOTS) -> list[str]:
    """The scheduled snapshot job, `times` times; what each recorded."""
    container = Container(settings, web_client(settings))
    try:
        return [await reports.snapshot(container) for _ in range(times)]
    finally:
        await container.pools.close()


async def upgraded(settings: Settings) -> Settings:
    async with connect(settings, "state") as conn:
        await upgrade(conn)
    return settings


async def report_text(settings: Settings) -> str:
    """The sections of the report as it would be posted now."""
    report = await build(settings, timedelta(hours=2))
    return "\n".join(b["text"]["text"] for b in render.blocks(report) if b["type"] == "section")


def alert_rows(settings: Settings) -> dict[str, tuple[bool, Any]]:
    with psycopg.connect(settings.state_dsn, autocommit=True) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT kind, alerting, changed_at FROM hotdata.backup_alerts")}


@pytest.fixture
def in_directory(settings: Settings, tmp_path: Path) -> Settings:
    settings.drill_source = "directory"
    settings.drill_backup_dir = tmp_path
    settings.backup_max_age_hours = 26.0
    return settings


# --- the newest dump's age --------------------------------------------------------------------

async def test_an_old_dump_alerts_once_and_its_recovery_once(in_directory: Settings,
                                                             slack: FakeSlack,
                                                             tmp_path: Path) -> None:
    settings = await upgraded(in_directory)
    dump(tmp_path, "app-1.dump", timedelta(hours=30))

    done = await snapshots(settings)

    [alert] = alerts(slack)
    assert alert.startswith(":rotating_light: *Backups have stopped*: newest backup 30.0 h old "
                            "(directory, ")
    assert "over the 26.0 h limit" in alert
    assert all(d.endswith("; failing: backup") for d in done), done
    alerting, since = alert_rows(settings)["backup"]
    assert alerting and since is not None

    # The report's health shows it, with its age now.
    health = await report_text(settings)
    assert "*Backups:* :rotating_light: newest backup 30.0 h old (directory, " in health
    assert "WAL archiving off" in health

    # The backup job runs again: one message says so, whatever follows.
    dump(tmp_path, "app-2.dump", timedelta(minutes=5))
    done = await snapshots(settings)

    first, back = alerts(slack)
    assert first == alert
    assert back.startswith(":white_check_mark: *Backups are back*: newest backup 5.0 min old")
    assert all(d.endswith("; backups ok") for d in done), done
    assert alert_rows(settings)["backup"][0] is False
    assert "*Backups:* newest backup 5.0 min old" in await report_text(settings)


async def test_no_dump_at_all_is_a_stopped_backup_too(in_directory: Settings, slack: FakeSlack,
                                                      tmp_path: Path) -> None:
    settings = await upgraded(in_directory)
    await snapshots(settings, times=2)
    [alert] = alerts(slack)
    assert alert.startswith(":rotating_light: *Backups have stopped*: no backup found "
                            "(directory): no dump in ")


async def test_two_replicas_checking_at_once_post_once(in_directory: Settings, slack: FakeSlack,
                                                       tmp_path: Path) -> None:
    """The leader runs the snapshot job once per slot (bot.schedule); even two checks at the
    same moment (two leaders for a moment) announce a change once: it flips under a row lock."""
    settings = await upgraded(in_directory)
    dump(tmp_path, "app.dump", timedelta(days=3))
    replicas = [Container(settings, web_client(settings)) for _ in range(2)]
    try:
        for _ in range(2):
            await asyncio.gather(*(reports.check_backups(c) for c in replicas))
    finally:
        for container in replicas:
            await container.pools.close()
    [alert] = alerts(slack)
    assert "newest backup 3.0 days old" in alert or "72.0 h old" in alert


async def test_a_dump_source_has_no_backup_to_watch(settings: Settings, slack: FakeSlack) -> None:
    settings = await upgraded(settings)  # HOTDATA_DRILL_SOURCE=dump: each drill takes its own
    done = await snapshots(settings, times=2)
    assert alerts(slack) == []
    assert all(d.endswith("; backups ok") for d in done)
    text = await report_text(settings)
    assert "*Backups:* each drill takes its own backup (`dump`) · WAL archiving off" in text


# --- WAL archiving ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def archiving() -> Iterator[pgcluster.Cluster]:
    """A cluster whose archive_command fails."""
    cluster = pgcluster.create({"wal_level": "replica", "archive_mode": "on",
                                "archive_command": "'false'"})
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def on_archiving(archiving: pgcluster.Cluster, fake_slack_server: FakeSlackServer,
                 slack: FakeSlack) -> Iterator[Settings]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(archiving.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield settings_for(archiving.url(name), slack_bot_token=BOT_TOKEN,
                           slack_api_url=fake_slack_server.api_url, channel=CHANNEL)
    finally:
        with psycopg.connect(archiving.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute("ALTER SYSTEM RESET archive_command")
            conn.execute("SELECT pg_reload_conf()")


def archiver(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM pg_stat_archiver")
        assert cur.description is not None
        row = cur.fetchone()
        assert row is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))


def wait_until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s")


def switch_after_a_write(url: str) -> str:
    """A write, then a WAL switch: the segment it ends is handed to the archiver; its name."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS written (n int)")
        conn.execute("INSERT INTO written SELECT generate_series(1, 1000)")
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        conn.execute("SELECT pg_switch_wal()")
    assert row is not None
    return str(row[0])


def failing(row: dict[str, Any]) -> bool:
    return row["last_failed_time"] is not None and (
        row["last_archived_time"] is None or row["last_failed_time"] > row["last_archived_time"])


async def test_failing_archiving_alerts_once_and_its_recovery_once(
        on_archiving: Settings, archiving: pgcluster.Cluster, slack: FakeSlack) -> None:
    settings = await upgraded(on_archiving)
    url = settings.database_url
    segment = switch_after_a_write(url)
    wait_until("archive_command failed for the segment", lambda: failing(archiver(url))
               and archiver(url)["last_failed_wal"] == segment)

    done = await snapshots(settings)

    [alert] = alerts(slack)
    assert alert.startswith(":rotating_light: *WAL archiving is failing*: WAL archiving failing: ")
    assert f"the last on `{segment}` at " in alert
    failures = re.search(r"failing: (\d+) failed attempt\(s\) since it last worked", alert)
    assert failures is not None and int(failures[1]) >= 1
    assert "see the server log for `archive_command`'s error" in alert
    assert all(d.endswith("; failing: archiving") for d in done), done
    assert ":rotating_light: WAL archiving failing: " in await report_text(settings)

    # archive_command works again: the archiver retries at the reload, and the next switch.
    with psycopg.connect(archiving.dsn(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET archive_command = 'true'")
        conn.execute("SELECT pg_reload_conf()")
    switch_after_a_write(url)
    wait_until("the archiver archived again", lambda: not failing(archiver(url)))

    done = await snapshots(settings)

    first, back = alerts(slack)
    assert first == alert
    assert back.startswith(":white_check_mark: *WAL archiving works again*: WAL archiving ok, "
                           "last segment archived ")
    assert all(d.endswith("; backups ok") for d in done), done
    assert alert_rows(settings)["archiving"][0] is False
