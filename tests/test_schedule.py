"""Scheduled work across replicas: two real `hotdata serve` processes share one state database;
only the leader (PostgreSQL advisory lock) runs a slot, each slot exactly once (job_runs), a
killed leader is replaced, restarts post nothing twice, and a slot missed while no replica ran
is recorded as missed or, inside the grace period, run once. Plus the cron arithmetic and
slot claiming on their own."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot import locks, migrate, pgcluster
from bot.container import Container
from bot.cron import cron_trigger, latest_fire, next_fire, period
from bot.db import connect
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.schedule import Job, Scheduler
from bot.settings import Settings
from bot.slack import web_client
from tests.conftest import BOT_TOKEN, SIGNING_SECRET
from tests.harness import TEMPLATE, clone, drop

HOTDATA = Path(sys.executable).parent / "hotdata"
CHANNEL = "C0REPORTS"
PERIOD_S = 4
REPORT_CRON = f"*/{PERIOD_S} * * * * *"  # six fields: seconds first
FAR_AWAY = "0 0 1 1 *"
HEALTH_TIMEOUT_S = 30.0


# --- cron arithmetic -------------------------------------------------------------------------

def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("cron", "now", "latest", "length"), [
    ("0 */2 * * *", "2025-06-13 12:00:30.5", "2025-06-13 12:00:00", timedelta(hours=2)),
    ("0 */2 * * *", "2025-06-13 12:00:00", "2025-06-13 12:00:00", timedelta(hours=2)),
    ("0 */2 * * *", "2025-06-13 11:59:59.9", "2025-06-13 10:00:00", timedelta(hours=2)),
    ("*/10 * * * *", "2025-06-13 00:05:00", "2025-06-13 00:00:00", timedelta(minutes=10)),
    ("30 3 * * *", "2025-06-13 02:00:00", "2025-06-12 03:30:00", timedelta(days=1)),
    ("0 9 * * mon", "2025-06-13 12:00:00", "2025-06-09 09:00:00", timedelta(days=7)),
    ("0 0 1 * *", "2025-06-13 12:00:00", "2025-06-01 00:00:00", timedelta(days=31)),
    ("*/4 * * * * *", "2025-06-13 12:00:30.5", "2025-06-13 12:00:28", timedelta(seconds=4)),
    ("*/4 * * * * *", "2025-06-13 12:00:28", "2025-06-13 12:00:28", timedelta(seconds=4)),
    ("15,45 * * * * *", "2025-06-13 12:00:50", "2025-06-13 12:00:45", timedelta(seconds=30)),
    ("15,45 * * * * *", "2025-06-13 12:00:20", "2025-06-13 12:00:15", timedelta(seconds=30)),
    ("0 30 9 * * *", "2025-06-13 09:29:59", "2025-06-12 09:30:00", timedelta(days=1)),
])
def test_latest_fire_and_period(cron: str, now: str, latest: str, length: timedelta) -> None:
    trigger = cron_trigger(cron)
    assert latest_fire(trigger, at(now)) == at(latest)
    assert period(trigger, at(now)) == length
    assert next_fire(trigger, at(latest)) == at(latest)
    upcoming = next_fire(trigger, at(now) + timedelta(microseconds=1))
    assert upcoming is not None and upcoming > at(now)
    assert latest_fire(trigger, upcoming - timedelta(microseconds=1)) == at(latest)


def test_six_fields_put_seconds_first() -> None:
    trigger = cron_trigger("7 */5 * * * *")
    assert latest_fire(trigger, at("2025-06-13 12:09:00")) == at("2025-06-13 12:05:07")
    assert period(trigger, at("2025-06-13 12:09:00")) == timedelta(minutes=5)


# --- slots, claims and the lock, in process --------------------------------------------------

@pytest.fixture
async def container(database: str, fake_slack_server: FakeSlackServer,
                    slack: FakeSlack) -> AsyncIterator[Container]:
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        database_url=database, slack_bot_token=BOT_TOKEN,
                        slack_signing_secret=SIGNING_SECRET,
                        slack_api_url=fake_slack_server.api_url, channel=CHANNEL,
                        report_cron=REPORT_CRON, snapshot_cron=FAR_AWAY)
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
    made = Container(settings, web_client(settings))
    yield made
    await made.pools.close()


def counting_job(name: str, cron: str, runs: list[datetime], fail: bool = False) -> Job:
    async def run(_: Container) -> str:
        runs.append(datetime.now(UTC))
        if fail:
            raise RuntimeError("the job broke")
        return f"run {len(runs)}"

    return Job(name, cron_trigger(cron), run)


async def job_runs(container: Container, job: str) -> list[dict[str, Any]]:
    async with connect(container.settings, "state") as conn:
        cur = await conn.execute("SELECT * FROM hotdata.job_runs WHERE job = %s "
                                 "ORDER BY scheduled_for", (job,))
        return await cur.fetchall()


async def test_a_slot_runs_once_however_often_it_is_claimed(container: Container) -> None:
    runs: list[datetime] = []
    job = counting_job("unit", "0 * * * *", runs)
    slot = at("2025-06-13 12:00:00")
    first, second = Scheduler(container, name="one"), Scheduler(container, name="two")

    assert await first.run_slot(job, slot) is True
    assert await first.run_slot(job, slot) is False
    assert await second.run_slot(job, slot) is False
    assert len(runs) == 1
    rows = await job_runs(container, "unit")
    assert [(r["scheduled_for"], r["status"], r["runner"], r["detail"]) for r in rows] == [
        (slot, "succeeded", "one", "run 1")]
    assert await second.run_slot(job, slot + timedelta(hours=1)) is True
    assert len(runs) == 2


async def test_a_failing_job_is_recorded_failed_and_not_rerun(container: Container) -> None:
    runs: list[datetime] = []
    job = counting_job("broken", "0 * * * *", runs, fail=True)
    slot = at("2025-06-13 12:00:00")
    scheduler = Scheduler(container, name="one")
    assert await scheduler.run_slot(job, slot) is True
    assert await scheduler.run_slot(job, slot) is False
    rows = await job_runs(container, "broken")
    assert [(r["status"], r["detail"]) for r in rows] == [
        ("failed", "RuntimeError: the job broke")]
    assert len(runs) == 1


async def test_catch_up_runs_a_recent_slot_once_or_records_it_missed(
        container: Container) -> None:
    runs: list[datetime] = []
    hourly = counting_job("hourly", "0 * * * *", runs)
    now = datetime.now(UTC)
    slot = latest_fire(hourly.trigger, now)
    assert slot is not None
    # the job last ran three slots ago: the two after it and the latest passed unled
    await record_run(container, "hourly", slot - timedelta(hours=3))

    strict = Scheduler(Container(
        container.settings.model_copy(update={"missed_grace_minutes": 0.0}), container.client),
        name="strict")
    strict.jobs = [hourly, counting_job("brand_new", "0 * * * *", runs)]
    await strict.catch_up()
    rows = await job_runs(container, "hourly")
    assert [(r["scheduled_for"], r["status"]) for r in rows][1:] == [
        (slot - timedelta(hours=2), "missed"), (slot - timedelta(hours=1), "missed"),
        (slot, "missed")]
    assert runs == []
    assert await job_runs(container, "brand_new") == []  # a first deployment missed nothing

    lenient = Scheduler(Container(
        container.settings.model_copy(update={"missed_grace_minutes": 61.0}), container.client),
        name="lenient")
    # an hourly job, so the latest slot cannot change between the two catch-ups below but
    # at the turn of an hour (a minutely one could, whenever a minute turned)
    recent = counting_job("recent", "0 * * * *", runs)
    hour = latest_fire(recent.trigger, datetime.now(UTC))
    assert hour is not None
    await record_run(container, "recent", hour - timedelta(hours=2))
    lenient.jobs = [hourly, recent]
    await lenient.catch_up()
    await lenient.catch_up()  # a second leader, or a second take-over: still once
    assert len(runs) == 1  # the latest slot; the hourly job's was already recorded missed
    rows = await job_runs(container, "recent")
    # the slot after the last run was missed, the latest one (within the grace) ran, once
    assert [(r["scheduled_for"], r["status"], r["runner"]) for r in rows][1:] == [
        (hour - timedelta(hours=1), "missed", "lenient"), (hour, "succeeded", "lenient")]


async def record_run(container: Container, job: str, slot: datetime) -> None:
    async with connect(container.settings, "state") as state:
        await state.execute("INSERT INTO hotdata.job_runs (job, scheduled_for, runner, status) "
                            "VALUES (%s, %s, 'earlier', 'succeeded')", (job, slot))


async def test_stopping_lets_a_claimed_slot_finish_and_be_recorded(container: Container) -> None:
    """`hotdata serve` stops its scheduler on SIGTERM: a slot already claimed must finish and
    be recorded, not be cancelled mid-post and left `running` for ever."""
    started = asyncio.Event()
    finished: list[str] = []

    async def slow(_: Container) -> str:
        started.set()
        await asyncio.sleep(0.5)
        finished.append("posted")
        return "posted"

    scheduler = Scheduler(container, name="stopping")
    job = Job("slow", cron_trigger("* * * * * *"), slow)
    scheduler.jobs = []
    scheduler.leader = True  # as if it held the lock (no campaign here)
    scheduler.aps.start()
    scheduler.aps.add_job(scheduler.step(scheduler.fire), "date", run_date=datetime.now(UTC),
                          args=[job])
    await asyncio.wait_for(started.wait(), 10)
    await scheduler.stop()
    assert finished == ["posted"]
    rows = await job_runs(container, "slow")
    assert [(r["status"], r["detail"]) for r in rows] == [("succeeded", "posted")]


async def test_a_step_stopped_mid_query_or_failing_on_the_database_logs_one_line(
        container: Container, caplog: pytest.LogCaptureFixture) -> None:
    """A replica shutting down cancels the campaign or heartbeat it is running: that ends
    quietly, not as a failure with a traceback (what APScheduler logs for an exception). A
    database error in a step is one warning line; the next run tries again."""
    caplog.set_level(logging.INFO)
    started = asyncio.Event()

    async def heartbeat() -> None:
        async with connect(container.settings, "state") as conn:
            started.set()
            await conn.execute("SELECT pg_sleep(60)")

    scheduler = Scheduler(container, name="quiet")
    scheduler.jobs = []
    scheduler.aps.start()
    scheduler.aps.add_job(scheduler.step(heartbeat), "date", run_date=datetime.now(UTC))
    await asyncio.wait_for(started.wait(), 10)
    await scheduler.stop()
    deadline = time.monotonic() + 30
    while "quiet: heartbeat stopped with the scheduler" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        await asyncio.sleep(0.05)

    async def campaign() -> None:
        raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")

    await scheduler.step(campaign)()
    assert "quiet: campaign failed, to be tried again: canceling statement due to lock " \
        "timeout" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "Traceback" not in caplog.text


async def test_one_leader_at_a_time_and_a_successor_when_it_goes(container: Container) -> None:
    first, second = Scheduler(container, name="first"), Scheduler(container, name="second")
    first.jobs = second.jobs = []  # leadership only
    try:
        await first.campaign()
        await second.campaign()
        assert (first.leader, second.leader) == (True, False)
        await first.campaign()  # keeps it
        assert first.leader
        async with connect(container.settings, "state") as conn:
            cur = await conn.execute("SELECT name, leader FROM hotdata.replicas ORDER BY name")
            assert [(r["name"], r["leader"]) for r in await cur.fetchall()] == [
                ("first", True), ("second", False)]
            cur = await conn.execute(
                "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = %s AND objid = %s AND granted",
                (locks.LEADER[0], locks.LEADER[1]))
            row = await cur.fetchone()
            assert row is not None and row["n"] == 1
        assert first._lock is not None
        await first._lock.close()  # its session ends (as when its process dies): lock released
        await second.campaign()
        assert second.leader
        await first.campaign()  # notices the loss, cannot take the lock back
        assert not first.leader
        async with connect(container.settings, "state") as conn:
            cur = await conn.execute("SELECT name, leader FROM hotdata.replicas ORDER BY name")
            assert [(r["name"], r["leader"]) for r in await cur.fetchall()] == [
                ("first", False), ("second", True)]
    finally:
        for scheduler in (first, second):
            if scheduler._lock is not None:
                await scheduler._lock.close()


# --- two real replicas -----------------------------------------------------------------------

def free_port() -> int:
    return pgcluster.free_port()


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Cluster:
    """The replicas of one test, their shared database and the fake Slack they post to."""
    url: str
    slack: FakeSlack
    api_url: str
    workdir: Path
    replicas: list[Replica] = field(default_factory=list)
    started: int = 0

    def start(self, grace_minutes: float = 15.0, report_cron: str = REPORT_CRON) -> Replica:
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.upper().startswith(("HOTDATA_", "SLACK_"))}
        env.update({
            "HOTDATA_DATABASE_URL": self.url, "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET, "HOTDATA_SLACK_API_URL": self.api_url,
            "HOTDATA_PORT": str(port), "HOTDATA_CHANNEL": CHANNEL,
            "HOTDATA_REPORT_CRON": report_cron, "HOTDATA_SNAPSHOT_CRON": FAR_AWAY,
            "HOTDATA_MISSED_GRACE_MINUTES": str(grace_minutes),
        })
        self.started += 1
        log = self.workdir / f"serve-{self.started}.log"
        with open(log, "wb") as stderr:
            process = subprocess.Popen([str(HOTDATA), "serve", "--host", "127.0.0.1"],
                                       env=env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=stderr)
        replica = Replica(process, port, log)
        self.replicas.append(replica)
        return replica

    def healthy(self, *replicas: Replica) -> None:
        for replica in replicas:
            deadline = time.monotonic() + HEALTH_TIMEOUT_S
            while True:
                assert replica.alive(), self.output(replica)
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{replica.port}/healthz", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                assert time.monotonic() < deadline, self.output(replica)
                time.sleep(0.1)

    def output(self, replica: Replica) -> str:
        return replica.log.read_text(errors="replace")[-3000:]

    def terminate(self, *replicas: Replica) -> None:
        for replica in replicas:
            if replica.alive():
                replica.process.send_signal(signal.SIGTERM)
        for replica in replicas:
            try:
                replica.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(timeout=5)
                raise AssertionError("hotdata serve ignored SIGTERM for 20 s") from None

    def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.alive():
                replica.process.kill()
                replica.process.wait(timeout=5)

    # --- what the replicas did ---------------------------------------------------------------
    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()

    def runs(self) -> list[tuple[datetime, str, str]]:
        """(slot, status, runner) of every report slot."""
        return [(r[0], r[1], r[2]) for r in self.query(
            "SELECT scheduled_for, status, runner FROM hotdata.job_runs WHERE job = 'report' "
            "ORDER BY scheduled_for")]

    def posts(self) -> int:
        return sum(1 for c in self.slack.answered("chat.postMessage")
                   if c.params.get("channel") == CHANNEL)

    def settled(self, timeout: float = 15.0) -> tuple[list[tuple[datetime, str, str]], int]:
        """Report slots and posts at a moment no slot is running (between two slots)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self.runs()
            if all(status != "running" for _, status, _ in before):
                posts = self.posts()
                if self.runs() == before:
                    return before, posts
            time.sleep(0.05)
        raise AssertionError(f"a report slot kept running: {self.runs()}")

    def between_slots(self, room: float = 1.5) -> None:
        """Return early in a gap: the slot that passed last has run (a busy machine may fire
        it late), none is running, and the next is at least `room` s away."""
        trigger = cron_trigger(REPORT_CRON)

        def now_is_quiet() -> bool:
            now = datetime.now(UTC)
            upcoming, last = next_fire(trigger, now), latest_fire(trigger, now)
            runs = self.runs()
            return (upcoming is not None and (upcoming - now).total_seconds() > room
                    and all(status != "running" for _, status, _ in runs)
                    and (last, "succeeded") in {(slot, status) for slot, status, _ in runs})

        self.wait_until("a quiet moment between two slots", now_is_quiet, 3 * PERIOD_S)

    def slot_passes_after(self, moment: datetime) -> None:
        """Wait until a slot has passed since `moment` (while nothing runs)."""
        trigger = cron_trigger(REPORT_CRON)
        self.wait_until("a slot passes", lambda: (latest_fire(trigger, datetime.now(UTC))
                                                  or moment) > moment, 3 * PERIOD_S)

    def leader(self) -> str | None:
        rows = self.query("SELECT name FROM hotdata.replicas WHERE leader "
                          "AND seen_at > now() - interval '15 seconds' ORDER BY seen_at DESC")
        return rows[0][0] if rows else None

    def name(self, replica: Replica) -> str:
        rows = self.query("SELECT name FROM hotdata.replicas WHERE name LIKE %s",
                          (f"%-{replica.pid}",))
        assert len(rows) == 1, rows
        return str(rows[0][0])

    def took_over(self, replicas: list[Replica]) -> datetime | None:
        """When one of `replicas` became the leader (its first campaign), once it is."""
        pids = {str(r.pid) for r in replicas}
        for name, started_at in self.query(
                "SELECT name, started_at FROM hotdata.replicas WHERE leader"):
            if name.rsplit("-", 1)[1] in pids:
                return started_at  # type: ignore[no-any-return]
        return None

    def wait_until(self, what: str, check: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.1)
        logs = "\n".join(self.output(r) for r in self.replicas)
        raise AssertionError(f"{what} within {timeout} s; runs {self.runs()}\n{logs}")


@pytest.fixture
def cluster(pg: pgcluster.Cluster, fake_slack_server: FakeSlackServer, slack: FakeSlack,
            tmp_path: Path) -> Iterator[Cluster]:
    name = clone(pg, TEMPLATE)  # pg_stat_statements created; target and state alike
    found = Cluster(pg.url(name), slack, fake_slack_server.api_url, tmp_path)
    try:
        yield found
    finally:
        found.stop_all()
        drop(pg, name)


def assert_exactly_once(runs: list[tuple[datetime, str, str]], posts: int) -> None:
    slots = [slot for slot, _, _ in runs]
    assert len(slots) == len(set(slots))
    assert all(slot.microsecond == 0 and slot.second % PERIOD_S == 0 for slot in slots), slots
    succeeded = [r for r in runs if r[1] == "succeeded"]
    assert posts == len(succeeded), (posts, runs)


def slot_before(moment: datetime) -> datetime:
    slot = latest_fire(cron_trigger(REPORT_CRON), moment)
    assert slot is not None
    return slot


def test_two_replicas_post_each_slot_once_through_failover_and_restarts(
        cluster: Cluster) -> None:
    # Two replicas on one state database: one leader, every slot once.
    a, b = cluster.start(), cluster.start()
    cluster.healthy(a, b)
    cluster.wait_until("a leader", cluster.leader, 15)
    cluster.wait_until("three reports", lambda: len(
        [r for r in cluster.runs() if r[1] == "succeeded"]) >= 3, 6 * PERIOD_S + 15)
    runs, posts = cluster.settled()
    assert_exactly_once(runs, posts)
    assert len(runs) >= 3
    assert all(status == "succeeded" for _, status, _ in runs), runs
    leader = cluster.leader()
    names = {cluster.name(a): a, cluster.name(b): b}
    assert leader in names
    assert {runner for _, _, runner in runs} == {leader}
    # Every slot since the leader's first is there: none skipped, none twice.
    slots = [slot for slot, _, _ in runs]
    assert slots == [slots[0] + timedelta(seconds=PERIOD_S * n) for n in range(len(slots))]
    # Each report built exactly one snapshot (the snapshot job itself is far away).
    assert cluster.query("SELECT count(*) FROM hotdata.snapshots")[0][0] == len(runs)

    # The leader is killed (between two slots): the other takes over and posts what follows.
    dead = names.pop(leader)
    survivor_name, survivor = next(iter(names.items()))
    cluster.between_slots()
    killed_at = datetime.now(UTC)
    dead.process.send_signal(signal.SIGKILL)
    dead.process.wait(timeout=5)
    cluster.wait_until("the survivor leads",
                       lambda: survivor_name in {r[0] for r in cluster.query(
                           "SELECT name FROM hotdata.replicas WHERE leader AND "
                           "seen_at > %s", (killed_at,))}, 30)
    cluster.wait_until("the survivor posts two slots",
                       lambda: len([r for r in cluster.runs()
                                    if r[2] == survivor_name and r[1] == "succeeded"]) >= 2, 20)
    runs, posts = cluster.settled()
    assert_exactly_once(runs, posts)
    after_kill = [r for r in runs if r[0] > killed_at]
    assert after_kill and {runner for _, _, runner in after_kill} == {survivor_name}
    # slots that passed during the takeover are recorded missed (the latest one ran); all
    # others ran
    missed = [s for s, status, _ in runs if status == "missed"]
    assert all(s > killed_at for s in missed), runs
    assert all(status in ("succeeded", "missed") for _, status, _ in runs), runs

    # Both stopped for longer than a period, restarted with no grace: the slot missed while
    # none ran (the latest before the new leader took over) is recorded as missed, and no
    # slot is posted twice.
    cluster.terminate(survivor)
    stopped_at = datetime.now(UTC)
    cluster.slot_passes_after(stopped_at)
    restarted = time.monotonic()
    c, d = cluster.start(grace_minutes=0), cluster.start(grace_minutes=0)
    cluster.healthy(c, d)
    takeover = cluster.wait_until("a new leader", lambda: cluster.took_over([c, d]), 30)
    missed_slot = slot_before(takeover)
    assert missed_slot > stopped_at
    cluster.wait_until("a report after the restart",
                       lambda: [r for r in cluster.runs()
                                if r[0] > missed_slot and r[1] == "succeeded"], 20)
    runs, posts = cluster.settled()
    assert_exactly_once(runs, posts)
    # every slot of the outage is recorded missed (grace 0), the latest included, none run
    gap = [(s, st) for s, st, _ in runs if stopped_at < s <= takeover]
    assert gap and gap[-1] == (missed_slot, "missed")
    assert {st for _, st in gap} == {"missed"}
    gap_slots = {s for s, _ in gap}
    assert next(r for s, _, r in runs if s == missed_slot) in {cluster.name(c), cluster.name(d)}
    assert all(status == "succeeded" for s, status, _ in runs if s > takeover), runs
    assert all(status in ("succeeded", "missed") for s, status, _ in runs
               if s not in gap_slots), runs
    # The next report says so.
    first_after = next(c for c in cluster.slack.answered("chat.postMessage")
                       if c.at > restarted and c.params.get("channel") == CHANNEL)
    blocks_text = str(first_after.params.get("blocks"))
    assert "Missed slots" in blocks_text and f"{missed_slot:%H:%M}" in blocks_text

    # Stopped again past a slot, restarted with a generous grace: the slot that passed while
    # none ran is run at the take-over, once; then every slot on time.
    # SIGTERM while a report is being built and posted: it finishes and is recorded.
    in_flight = cluster.wait_until(
        "a slot in progress", lambda: [s for s, st, _ in cluster.runs() if st == "running"],
        2 * PERIOD_S + 5)
    cluster.terminate(c, d)
    stopped_at = datetime.now(UTC)
    cluster.slot_passes_after(stopped_at)
    e, f = cluster.start(grace_minutes=60), cluster.start(grace_minutes=60)
    cluster.healthy(e, f)
    takeover = cluster.wait_until("a new leader", lambda: cluster.took_over([e, f]), 30)
    late_slot = slot_before(takeover)
    assert late_slot > stopped_at
    cluster.wait_until("two reports after the restart",
                       lambda: len([r for r in cluster.runs()
                                    if r[0] >= late_slot and r[1] == "succeeded"]) >= 2, 20)
    cluster.terminate(e, f)
    runs, posts = cluster.settled(timeout=1)  # nothing runs any more
    assert_exactly_once(runs, posts)
    # with a long grace the latest slot of the outage runs once; the earlier ones are missed
    gap = [(s, st) for s, st, _ in runs if stopped_at < s <= takeover]
    assert gap and gap[-1] == (late_slot, "succeeded")
    assert {st for _, st in gap[:-1]} <= {"missed"}
    assert (in_flight[0], "succeeded") in {(s, st) for s, st, _ in runs}
    assert all(status in ("succeeded", "missed") for _, status, _ in runs), runs
    assert missed_slot in [s for s, st, _ in runs if st == "missed"]
