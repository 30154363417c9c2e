"""Scheduled work across replicas: APScheduler's cron triggers fire on every replica, but only
the leader — the replica holding a PostgreSQL session advisory lock on the state database —
runs a job, and only after claiming its slot in hotdata.job_runs (unique on job and scheduled
time). A restart, a clock skew or two leaders for a moment therefore never run a slot twice;
a slot missed while no replica ran is run once at start-up inside a grace period, otherwise
recorded as missed (and mentioned in the next report)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot import locks
from bot.container import Container
from bot.cron import cron_trigger, latest_fire, passed_slots
from bot.db import DatabaseUnavailable, connect, open_connection
from bot.drills.store import heartbeat
from bot.flows import approvals, drills, proposals, reports
from bot.settings import Settings

log = logging.getLogger(__name__)

CAMPAIGN_SECONDS = 10  # a dead leader's lock is taken over within this (plus detection)
STOP_GRACE_SECONDS = 30.0  # how long stopping waits for claimed slots to finish


@dataclass(frozen=True)
class Job:
    name: str
    trigger: CronTrigger
    run: Callable[[Container], Awaitable[str]]


def jobs(settings: Settings) -> list[Job]:
    async def report(container: Container) -> str:
        return await reports.post(container)

    async def snapshot(container: Container) -> str:  # and the backups' health
        return await reports.snapshot(container)

    async def drill(container: Container) -> str:
        result = await drills.run_in_channel(container, container.settings.channel or "",
                                             "scheduled")
        return f"drill #{result.id} {result.status}"

    runs = {"report": report, "snapshot": snapshot, "drill": drill}
    return [Job(name, cron_trigger(expression), runs[name])
            for name, expression in settings.scheduled_jobs.items()]


class Scheduler:
    def __init__(self, container: Container, name: str | None = None) -> None:
        self.container = container
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.jobs = jobs(container.settings)
        self.leader = False
        self._lock: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._runs: set[asyncio.Task[bool]] = set()
        self.aps = AsyncIOScheduler(timezone=UTC)

    async def start(self) -> None:
        for job in self.jobs:
            self.aps.add_job(self.step(self.fire), job.trigger, args=[job], id=job.name,
                             max_instances=1, coalesce=True, misfire_grace_time=60)
        self.aps.add_job(self.step(self.campaign), "interval", seconds=CAMPAIGN_SECONDS,
                         id="campaign", next_run_time=datetime.now(UTC), max_instances=1)
        self.aps.add_job(self.step(self.heartbeat), "interval", minutes=1,
                         id="heartbeat", next_run_time=datetime.now(UTC), max_instances=1,
                         coalesce=True)  # every replica: an idempotent upsert
        if self.container.settings.apply_window:
            self.aps.add_job(self.step(self.apply_window), "cron", second=5,
                             id="apply-window", max_instances=1, coalesce=True)
        self.aps.start()

    def step(self, work: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """`work` as APScheduler runs it. Cancelled by `stop()` (a replica shutting down), it
        ends quietly: APScheduler would log the cancellation as the job's failure, with a
        traceback. A database error is one line in the log, and the next run tries again."""
        async def run(*args: Any) -> None:
            try:
                await work(*args)
            except asyncio.CancelledError:
                log.info("%s: %s stopped with the scheduler", self.name, work.__name__)
            except (psycopg.Error, DatabaseUnavailable) as error:
                log.warning("%s: %s failed, to be tried again: %s", self.name, work.__name__,
                            self.container.settings.scrub(str(error)))
        run.__name__ = work.__name__
        return run

    async def apply_window(self) -> None:
        """Each minute, on the leader: build what waits for HOTDATA_APPLY_WINDOW, if this
        minute is inside it (each proposal exactly once, whichever replica leads)."""
        if self.leader:
            await approvals.apply_queued(self.container, datetime.now(UTC))

    async def heartbeat(self) -> None:
        """Every minute, on every replica: the drills' RPO clock, and the cards of proposals
        that have just expired."""
        async with self.container.pools.connection("state") as state:
            await heartbeat(state)
        await proposals.expire_stale(self.container)

    async def stop(self) -> None:
        self.aps.shutdown(wait=False)  # cancels its coroutines; claimed slots are shielded
        if self._runs:  # finished and recorded, not left `running` with a half-posted report
            await asyncio.wait(set(self._runs), timeout=STOP_GRACE_SECONDS)
        if self._lock is not None:
            await self._lock.close()  # the lock goes with the session
        self.leader = False

    async def campaign(self) -> None:
        """Keep or take the leadership; the lock lives as long as this session."""
        settings = self.container.settings
        if self.leader:
            try:
                assert self._lock is not None
                await self._lock.execute("SELECT 1")
                await self._seen(True)
                return
            except (psycopg.Error, AssertionError, DatabaseUnavailable):
                log.warning("%s lost the leadership (state database connection)", self.name)
                self.leader = False
                self._lock = None
        try:
            conn = await open_connection(settings, "state")  # a session: refuses a pooler
        except DatabaseUnavailable as error:
            log.warning("%s cannot campaign for the leadership: %s", self.name, error)
            return
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s) AS ok", locks.LEADER)
        row = await cur.fetchone()
        if not row or not row["ok"]:
            await conn.close()
            await self._seen(False)
            return
        self._lock, self.leader = conn, True
        log.info("%s is the leader", self.name)
        await self._seen(True)
        await self.catch_up()

    async def _seen(self, leader: bool) -> None:
        try:
            async with connect(self.container.settings, "state") as state:
                await state.execute(
                    "INSERT INTO hotdata.replicas (name, leader) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET seen_at = now(), leader = excluded.leader",
                    (self.name, leader))
        except (DatabaseUnavailable, psycopg.Error):
            log.warning("cannot record replica %s", self.name)

    async def catch_up(self) -> None:
        """Slots that passed while no replica led since the job last ran: the latest is run
        once if still recent, the others are recorded as missed. A job that never ran (a
        first deployment) missed nothing."""
        now = datetime.now(UTC)
        grace = timedelta(minutes=self.container.settings.missed_grace_minutes)
        async with connect(self.container.settings, "state") as state:
            cur = await state.execute("SELECT job, max(scheduled_for) AS last "
                                      "FROM hotdata.job_runs GROUP BY job")
            last_run = {row["job"]: row["last"] for row in await cur.fetchall()}
        for job in self.jobs:
            if job.name not in last_run:
                continue
            slots = passed_slots(job.trigger, last_run[job.name], now)
            for slot in slots[:-1]:
                await self._record(job, slot, "missed", "no replica was leading at this time")
            if slots and now - slots[-1] <= grace:
                await self.run_slot(job, slots[-1])
            elif slots:
                await self._record(job, slots[-1], "missed",
                                   "no replica was leading at this time")

    async def fire(self, job: Job) -> None:
        if not self.leader:
            return
        slot = latest_fire(job.trigger, datetime.now(UTC))
        if slot is not None:
            await self.run_slot(job, slot)

    async def run_slot(self, job: Job, slot: datetime) -> bool:
        """Claim the slot and run the job; False when it was already claimed. Shielded from the
        cancellation of the job that called it: `stop()` waits for it instead."""
        task = asyncio.ensure_future(self._run_slot(job, slot))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return await asyncio.shield(task)

    async def _run_slot(self, job: Job, slot: datetime) -> bool:
        async with connect(self.container.settings, "state") as state:
            cur = await state.execute(
                "INSERT INTO hotdata.job_runs (job, scheduled_for, runner) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING job", (job.name, slot, self.name))
            if await cur.fetchone() is None:
                return False
        try:
            detail = await job.run(self.container)
            status = "succeeded"
        except Exception as error:  # recorded and logged, never lost silently
            log.exception("job %s for %s failed", job.name, slot)
            detail = self.container.settings.scrub(f"{type(error).__name__}: {error}")
            status = "failed"
        async with connect(self.container.settings, "state") as state:
            await state.execute(
                "UPDATE hotdata.job_runs SET status = %s, finished_at = now(), detail = %s "
                "WHERE job = %s AND scheduled_for = %s", (status, detail[:1000], job.name, slot))
        return True

    async def _record(self, job: Job, slot: datetime, status: str, detail: str) -> None:
        async with connect(self.container.settings, "state") as state:
            await state.execute(
                "INSERT INTO hotdata.job_runs (job, scheduled_for, runner, status, finished_at, "
                "detail) VALUES (%s, %s, %s, %s, now(), %s) ON CONFLICT DO NOTHING",
                (job.name, slot, self.name, status, detail))
