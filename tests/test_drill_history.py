"""RTO and RPO over time: synthetic drills in the state schema of a real PostgreSQL give the
table, the chart (a PNG), the RTO's growth per GB restored and the forecast of when it reaches
the target; from a signed `/hotdata drill history`, the report and the CLI, with the fake Slack
Web API."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image
from psycopg.types.json import Jsonb

from bot.container import Container
from bot.db import connect
from bot.drills import history
from bot.drills.history import GB, Drill, analyse
from bot.fake_slack import FakeSlack
from bot.flows import drills
from bot.flows import reports as delivery
from bot.migrate import upgrade
from bot.render import drill as render
from bot.render import report as render_report
from bot.settings import Settings
from bot.slack import web_client
from tests.harness import BotUnderTest

HOTDATA = Path(sys.executable).parent / "hotdata"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
START = datetime(2026, 1, 1, 3, 30, tzinfo=UTC)
TARGET_S = 130.0
# RTO = 30 s + 20 s per GB; 1, 2, 3, 4 GB ten days apart: 0.1 GB a day. The target is reached
# at 5 GB, one GB past the latest drill: ten days after it.
SIZES_GB = [1, 2, 3, 4]
CROSSING = START + timedelta(days=40)


def drill_row(n: int, size_gb: float, status: str = "passed") -> dict[str, Any]:
    rto = 30 + 20 * size_gb
    return {"finished_at": START + timedelta(days=10 * n), "status": status, "rto": rto,
            "rpo": 60.0 + n, "result": {"bytes_restored": int(size_gb * GB), "phases": [
                {"name": "fetch", "seconds": round(0.2 * rto, 3)},
                {"name": "restore", "seconds": round(0.7 * rto, 3)},
                {"name": "verify", "seconds": round(0.1 * rto, 3)}]}}


def insert_drills(url: str, rows: list[dict[str, Any]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for row in rows:
            conn.execute(
                "INSERT INTO hotdata.drills (source, status, started_at, finished_at, "
                "rto_seconds, rpo_seconds, result) VALUES ('dump', %s, %s, %s, %s, %s, %s)",
                (row["status"], row["finished_at"] - timedelta(seconds=row["rto"]),
                 row["finished_at"], row["rto"], row["rpo"], Jsonb(row["result"])))


def synthetic(url: str) -> None:
    """Four passing drills on the line, and a failed one (slow, big) the fit leaves out."""
    rows = [drill_row(n, size) for n, size in enumerate(SIZES_GB)]
    rows.insert(2, {**drill_row(1, 8, status="failed"), "rto": 900.0})
    insert_drills(url, rows)


async def upgraded(settings: Settings) -> None:
    async with connect(settings, "state") as conn:
        await upgrade(conn)


@pytest.fixture
def state(settings: Settings) -> Settings:
    """The conftest settings (state in the target database, upgraded) with an RTO target."""
    settings.rto_target_seconds = TARGET_S
    asyncio.run(upgraded(settings))
    return settings


def valid_png(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(data))
    image.verify()  # the whole stream decodes
    return image.size  # type: ignore[no-any-return]


# --- the trend and the forecast ---------------------------------------------------------------

async def test_synthetic_drills_give_the_trend_and_the_forecast(state: Settings) -> None:
    synthetic(state.database_url)
    found = await drills.history(state, limit=10)

    assert [d.status for d in found.drills] == ["passed", "passed", "failed", "passed", "passed"]
    assert [d.bytes_restored for d in found.drills if d.status == "passed"] == [
        s * GB for s in SIZES_GB]
    assert found.drills[0].phases == [("fetch", 10.0), ("restore", 35.0), ("verify", 5.0)]
    assert found.seconds_per_gb == pytest.approx(20.0)
    assert found.base_seconds == pytest.approx(30.0)
    assert found.growth_per_day == pytest.approx(0.1 * GB)
    assert found.size_at_target == pytest.approx(5 * GB)
    assert found.outlook == "crossing"
    assert found.crossing is not None
    assert abs((found.crossing - CROSSING).total_seconds()) < 1
    assert found.rto_at(6 * GB) == pytest.approx(150.0)

    text = render.trend(found)
    assert text == ("RTO grows 20.0 s per GB restored; the database grows 102.4 MB per day. "
                    "At this growth the RTO reaches the 2.2 min target around 2026-02-10 "
                    "(at 5.0 GB).")
    table = render.history_table(found)
    assert table.startswith("```\ndrill") and table.endswith("```")
    newest, oldest = table.index(f"#{found.drills[-1].id} "), table.index(f"#{found.drills[0].id} ")
    assert newest < oldest  # newest first
    assert "2026-01-31 03:30" in table and "4.0 GB" in table and "failed" in table
    assert "fetch 22.0 s · restore 77.0 s · verify 11.0 s" in table  # the 4 GB drill


async def test_the_last_n_drills_only(state: Settings) -> None:
    synthetic(state.database_url)
    found = await drills.history(state, limit=2)
    assert [d.bytes_restored for d in found.drills] == [3 * GB, 4 * GB]
    assert found.seconds_per_gb == pytest.approx(20.0)
    assert found.crossing is not None and abs((found.crossing - CROSSING).total_seconds()) < 1


async def test_the_chart_is_a_png_of_phases_rto_and_rpo(state: Settings) -> None:
    synthetic(state.database_url)
    found = await drills.history(state)
    png = history.chart(found)
    assert png is not None
    assert valid_png(png) == (900, 700)
    assert history.chart(analyse([], TARGET_S)) is None


def sample(sizes_days: list[tuple[float, float]], rto: Any) -> list[Drill]:
    return [Drill(n, "passed", START + timedelta(days=days), rto(size), 60.0, int(size * GB),
                  [("restore", rto(size))]) for n, (size, days) in enumerate(sizes_days, 1)]


@pytest.mark.parametrize(("drills_", "target", "outlook", "says"), [
    (sample([(1, 0), (2, 10)], lambda s: 30 + 20 * s), None, "no_target",
     "set HOTDATA_RTO_TARGET_SECONDS"),
    (sample([(2, 0)], lambda s: 70.0), TARGET_S, "few_drills",
     "two passing drills of different sizes"),
    (sample([(2, 0), (2, 10)], lambda s: 70.0), TARGET_S, "few_drills",
     "two passing drills of different sizes"),
    (sample([(1, 0), (2, 10)], lambda s: 100.0 - 10 * s), TARGET_S, "flat_rto",
     "does not grow with the size"),
    (sample([(2, 0), (1, 10)], lambda s: 30 + 20 * s), TARGET_S, "flat_size",
     "database shrinks"),
    (sample([(1, 0), (6, 10)], lambda s: 30 + 20 * s), TARGET_S, "over",
     "already over the 2.2 min target"),
    (sample([(1, 0), (1.001, 10)], lambda s: 30 + 20 * s), TARGET_S, "distant",
     "more than ten years"),
])
def test_without_a_crossing_the_forecast_says_why(drills_: list[Drill], target: float | None,
                                                  outlook: str, says: str) -> None:
    found = analyse(drills_, target)
    assert found.outlook == outlook
    assert found.crossing is None
    assert says.lower() in render.trend(found).lower()


# --- Slack ------------------------------------------------------------------------------------

@pytest.fixture
def history_bot(settings: Settings, slack: FakeSlack) -> Iterator[BotUnderTest]:
    settings.rto_target_seconds = TARGET_S
    running = BotUnderTest(settings, slack).start()  # upgrades the state schema
    try:
        yield running
    finally:
        running.stop()


def test_slash_drill_history_without_drills_says_so(history_bot: BotUnderTest,
                                                    slack: FakeSlack) -> None:
    reply = history_bot.slash("drill history")
    assert reply.status == 200
    assert reply.text == "Looking up the last 10 restore drills…"
    [answer] = slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
    assert answer.params["response_type"] == "ephemeral"
    assert answer.params["text"] == render.NO_HISTORY
    assert "No restore drills yet" in answer.params["text"]
    assert slack.answered("chat.postMessage") == []


def test_slash_drill_history_posts_the_table_and_the_chart(history_bot: BotUnderTest,
                                                           slack: FakeSlack) -> None:
    synthetic(history_bot.settings.database_url)
    reply = history_bot.slash("drill history 4", channel="C0DBOPS")
    assert reply.status == 200
    assert reply.text == "Looking up the last 4 restore drills…"
    [posted] = slack.wait_for("chat.postMessage", timeout=30)
    assert posted.params["channel"] == "C0DBOPS"
    assert posted.params["text"].startswith("Restore drills: the last 4; #")
    blocks = posted.params["blocks"]
    assert blocks[0]["text"]["text"] == "Restore drills: the last 4"
    body = "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section")
    assert "20.0 s per GB restored" in body and "around 2026-02-10" in body
    assert body.count(" passed ") == 3 and body.count(" failed ") == 1  # the last 4 only
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    completed = slack.wait_for("files.completeUploadExternal", timeout=30)[0].params
    assert completed["channel_id"] == "C0DBOPS"
    assert re.fullmatch(r"\d+\.\d{6}", completed["thread_ts"])  # the message's ts
    uploaded = slack.wait_for("upload")
    valid_png(slack.uploads[uploaded[0].params["file_id"]])
    assert slack.answered(f"response_url/{reply.response_key}") == []


@pytest.mark.parametrize(("text", "says"), [
    ("drill history 0", "`history` takes a number of drills from 1 to 50, got `0`."),
    ("drill history lots", "`history` takes a number of drills from 1 to 50, got `lots`."),
    ("drill now", "`/hotdata drill` takes nothing or `history [N]`, got `now`."),
])
def test_slash_drill_history_mistakes_get_usage(history_bot: BotUnderTest, text: str,
                                                says: str) -> None:
    reply = history_bot.slash(text)
    assert reply.status == 200
    assert says in reply.text and "/hotdata drill history [N]" in reply.text


# --- the report and the CLI -------------------------------------------------------------------

async def test_the_report_shows_the_drills_and_uploads_their_chart(state: Settings,
                                                                   slack: FakeSlack) -> None:
    synthetic(state.database_url)
    with psycopg.connect(state.database_url, autocommit=True) as conn:  # not a quiet report
        conn.execute("INSERT INTO hotdata.job_runs (job, scheduled_for, status) VALUES "
                     "('report', now() - interval '90 minutes', 'missed')")
    container = Container(state, web_client(state))
    try:
        await delivery.post(container, "C0REPORTS")
    finally:
        await container.pools.close()
    [posted] = slack.wait_for("chat.postMessage")
    body = "\n".join(b["text"]["text"] for b in posted.params["blocks"]
                     if b["type"] == "section")
    assert "*Restore drills*\n```" in body and "around 2026-02-10" in body
    assert "*Backups:* not checked yet" in body
    titles = [json.loads(c.params["files"])[0]["title"] if isinstance(c.params["files"], str)
              else c.params["files"][0]["title"]
              for c in slack.wait_for("files.completeUploadExternal")]
    assert titles == ["Restore drills: RTO, RPO and phases of the last 5"]
    valid_png(slack.uploads[slack.wait_for("upload")[0].params["file_id"]])
    assert "Restore drills" in render_report.markdown(
        await _report(state), await drills.history(state))


async def _report(settings: Settings) -> Any:
    from bot.reports.report import build

    return await build(settings, timedelta(hours=2))


def test_cli_drill_history(database: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HOTDATA_", "SLACK_"))}
    env.update(HOTDATA_DATABASE_URL=database, HOTDATA_RTO_TARGET_SECONDS=str(TARGET_S))

    def hotdata(*args: str) -> str:
        done = subprocess.run([str(HOTDATA), "drill", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=90, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert hotdata("--history").startswith("No restore drills yet: run `hotdata drill`")
    synthetic(database)  # the state schema is there now: the CLI upgraded it
    data = json.loads(hotdata("--history", "4", "--format", "json"))
    assert len(data["drills"]) == 4 and data["outlook"] == "crossing"
    assert data["rto_seconds_per_gb"] == pytest.approx(20.0)
    assert datetime.fromisoformat(data["crossing"]).date() == CROSSING.date()
    text = hotdata("--history")
    assert "| drill | finished (UTC) |" in text and "around 2026-02-10" in text
