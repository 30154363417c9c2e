"""Restore drills from a pgBackRest stanza: a source cluster archiving its WAL with pgBackRest
(from the distribution's packages), a real full backup, writes after it that only the archived
WAL holds, and a drill that restores, replays, promotes, verifies and removes the copy."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot import locks, pgcluster, tools
from bot.db import connect
from bot.drills import runner, store
from bot.drills.model import DrillResult
from bot.drills.sources import pgbackrest
from bot.render import drill as render
from bot.settings import Settings
from tests.test_drills import (
    DESIGN_KEYS,
    Source,
    check,
    create_source,
    exact_counts,
    source_state,
    state_rows,
)

STANZA = "app"


async def beat(settings: Settings) -> None:
    """The heartbeat `hotdata serve` writes every minute."""
    async with connect(settings, "state") as conn:
        await store.heartbeat(conn)


@dataclass
class Stanza:
    base: Path  # config, repository, logs, locks and the drills' restore directory
    source: Source
    run_as: str | None

    @property
    def config(self) -> Path:
        return self.base / "pgbackrest.conf"

    def settings(self, **extra: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.source.url, "drill_source": "pgbackrest",
            "drill_pgbackrest_stanza": STANZA, "drill_pgbackrest_config": self.config,
            "drill_restore_dir": self.base / "restores", "app_role": "authenticated",
            "app_jwt_claims": json.dumps({"sub": self.source.heavy_user}), **extra}
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def pgbackrest(self, *args: str, config: Path | None = None) -> None:
        done = subprocess.run([tools.find("pgbackrest"), f"--config={config or self.config}",
                               f"--stanza={STANZA}", *args], user=self.run_as,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr + done.stdout


def write_config(path: Path, base: Path, repo: Path, cluster: pgcluster.Cluster) -> None:
    path.write_text(f"""[global]
repo1-path={repo}
repo1-retention-full=2
log-path={base / "log"}
lock-path={base / "lock"}
spool-path={base / "spool"}
log-level-file=off
start-fast=y
compress-type=none

[{STANZA}]
pg1-path={cluster.datadir}
pg1-port={cluster.port}
pg1-socket-path={cluster.socket_dir}
pg1-user={cluster.superuser}
""")


def wait_archived(source: Source) -> None:
    """Switch to a new WAL segment and wait until the archiver has pushed the old one."""
    with psycopg.connect(source.pg.dsn(), autocommit=True) as conn:
        [(segment,)] = conn.execute(
            "SELECT pg_walfile_name(pg_switch_wal())").fetchall()
        for _ in range(300):
            [(archived,)] = conn.execute(
                "SELECT last_archived_wal FROM pg_stat_archiver").fetchall()
            if archived is not None and archived >= segment:
                return
            time.sleep(0.1)
    raise AssertionError(f"WAL segment {segment} was not archived")


@contextmanager
def open_stanza(make_cluster: Callable[[dict[str, str]], pgcluster.Cluster],
                make_source: Callable[[pgcluster.Cluster], Source]) -> Iterator[Stanza]:
    """A cluster archiving its WAL to a pgBackRest stanza, a source database in it, a full
    backup, then rows and a heartbeat only the archived WAL carries."""
    run_as = pgcluster.server_user()
    base = Path(tempfile.mkdtemp(prefix="hotdata-pgbackrest-"))
    for path in (base, *(base / d for d in ("repo", "log", "lock", "spool", "restores"))):
        path.mkdir(exist_ok=True)
        pgcluster.chown(path, run_as)
    push = f"pgbackrest --config={base / 'pgbackrest.conf'} --stanza={STANZA} archive-push %p"
    cluster = make_cluster({"wal_level": "replica", "archive_mode": "on",
                            "archive_command": f"'{push}'"})
    try:
        write_config(base / "pgbackrest.conf", base, base / "repo", cluster)
        made = Stanza(base, make_source(cluster), run_as)
        made.pgbackrest("stanza-create")
        made.pgbackrest("--type=full", "backup")
        with psycopg.connect(made.source.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO notifications (user_id, kind, body, read, created_at) "
                         "SELECT user_id, kind, 'after the backup', false, now() "
                         "FROM notifications LIMIT 25")
        asyncio.run(beat(made.settings()))
        wait_archived(made.source)
        yield made
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbackrest_handles_server(pg: pgcluster.Cluster) -> None:
    """Skip when this machine's pgBackRest does not support the session's PostgreSQL (Debian
    12's pgBackRest 2.45 and PostgreSQL 18): asked once, by a stanza-create on the session's
    cluster, and only on pgBackRest's own word that it does not know the version."""
    run_as = pgcluster.server_user()
    base = Path(tempfile.mkdtemp(prefix="hotdata-pgbackrest-probe-"))
    try:
        for path in (base, *(base / d for d in ("repo", "log", "lock", "spool"))):
            path.mkdir(exist_ok=True)
            pgcluster.chown(path, run_as)
        write_config(base / "pgbackrest.conf", base, base / "repo", pg)
        done = subprocess.run([tools.find("pgbackrest"), f"--config={base / 'pgbackrest.conf'}",
                               f"--stanza={STANZA}", "stanza-create"], user=run_as,
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if done.returncode == 0:
        return
    refusal = asyncio.run(pgbackrest.unsupported(done.stderr + done.stdout,
                                                 pgcluster.server_major(pg.bindir), run_as))
    assert refusal is not None, done.stderr + done.stdout  # any other failure is a failure
    pytest.skip(refusal)


@pytest.fixture(scope="module")
def stanza(pgbackrest_handles_server: None) -> Iterator[Stanza]:
    with open_stanza(lambda conf: pgcluster.create(conf), create_source) as made:
        yield made


@contextmanager
def heartbeats(source: Source) -> Iterator[list[tuple[datetime, datetime]]]:
    """Heartbeats every quarter second, and a WAL switch every second (as archive_timeout
    would), while the block runs: each heartbeat and when its commit was seen."""
    written: list[tuple[datetime, datetime]] = []
    stop = threading.Event()

    def beat_and_switch() -> None:
        with psycopg.connect(source.dsn, autocommit=True) as conn:
            for n in itertools.count():
                [(at,)] = conn.execute("UPDATE hotdata.heartbeat SET at = clock_timestamp() "
                                       "WHERE id = 1 RETURNING at").fetchall()
                written.append((at, datetime.now(UTC)))
                if n % 4 == 3:
                    conn.execute("SELECT pg_switch_wal()")
                if stop.wait(0.25):
                    return

    beats = threading.Thread(target=beat_and_switch)
    beats.start()
    try:
        yield written
    finally:
        stop.set()
        beats.join()


def assert_stopped_at_target(result: DrillResult, written: list[tuple[datetime, datetime]],
                             finished: datetime) -> None:
    """The copy holds every heartbeat committed before the target and none after it, and the
    drill says how close to the target it got."""
    assert result.status == "passed", [c for c in result.checks if not c.ok]
    target = result.recovery_target
    assert target is not None and target < finished
    recovery = check(result, "recovery")
    assert recovery.detail.startswith(f"PITR to {target:%Y-%m-%d %H:%M:%S}"), recovery
    assert re.search(r"recovered within \d+\.\d s of the target", recovery.detail), recovery
    assert result.rpo_seconds is not None and result.rpo_seconds >= 0
    restored = target - timedelta(seconds=result.rpo_seconds)
    committed_before = [at for at, seen in written if seen <= target]
    assert restored <= target  # none after the target
    if committed_before:  # the last one before it (the RPO is rounded to the millisecond)
        assert restored >= max(committed_before) - timedelta(milliseconds=1)
    assert json.loads(render.as_json(result))["recovery_target"] == target.isoformat()


@dataclass
class CleanDrill:
    """A drill of a physical backup (pgBackRest, Barman) and what surrounds it: the source,
    the directory its copy was restored under (`base`/restores), the last heartbeat before
    it, and the source's state before and after."""

    source: Source
    base: Path
    result: DrillResult
    heartbeat: datetime
    started: datetime
    finished: datetime
    before: dict[str, Any]
    after: dict[str, Any]


def clean_drill(source: Source, base: Path, settings: Settings) -> CleanDrill:
    [(heartbeat,)] = state_rows(source, "SELECT at FROM hotdata.heartbeat")
    before = source_state(source)
    started = datetime.now(UTC)
    result = asyncio.run(runner.run(settings, requested_by="U0TESTER"))
    finished = datetime.now(UTC)
    return CleanDrill(source, base, result, heartbeat, started, finished, before,
                      source_state(source))


@pytest.fixture(scope="module")
def clean(stanza: Stanza) -> CleanDrill:
    return clean_drill(stanza.source, stanza.base, stanza.settings())


def test_pgbackrest_drill_passes_with_phases_and_the_json_shape(clean: CleanDrill) -> None:
    result = clean.result
    assert result.status == "passed", [c for c in result.checks if not c.ok]
    shape = json.loads(render.as_json(result))
    assert set(shape) >= DESIGN_KEYS and shape["source"] == "pgbackrest"
    assert [p["name"] for p in shape["phases"]] == ["fetch", "restore", "verify"]
    assert {"recovery", "row counts", "RLS policies", "grants", "RLS probes",
            "amcheck"} <= {c["name"] for c in shape["checks"]}
    assert result.bytes_restored > 10 * 2**20  # the backup's database size, for extrapolating


def test_pgbackrest_drill_replays_the_archive_past_the_backup(clean: CleanDrill) -> None:
    """The rows written after the backup are in the copy: recovery ran to the archive's end."""
    recovery = check(clean.result, "recovery")
    assert recovery.ok and "replayed to its end" in recovery.detail, recovery
    counts = exact_counts(clean.source)
    assert clean.result.tables_verified == len(counts)
    assert clean.result.rows_verified == sum(counts.values())
    rows = check(clean.result, "row counts")
    assert rows.ok and "older than the source" not in rows.detail, rows
    probes = check(clean.result, "RLS probes")
    assert probes.ok and probes.detail.startswith("4 probes"), probes


def test_pgbackrest_rpo_is_the_replayed_heartbeat_not_the_backup_age(clean: CleanDrill) -> None:
    rpo, age = clean.result.rpo_seconds, clean.result.backup_age_seconds
    assert rpo is not None and age is not None
    # The heartbeat was written after the backup and reached the copy through the archive.
    assert rpo < age
    low = (clean.started - clean.heartbeat).total_seconds()
    high = (clean.finished - clean.heartbeat).total_seconds()
    assert low - 0.05 <= rpo <= high + 0.05


def test_pgbackrest_drill_removes_its_copy_and_writes_nothing_to_the_source(
        clean: CleanDrill) -> None:
    root = Path(clean.result.scratch_database or "")
    assert root.parent == clean.base / "restores" and not root.exists()
    assert state_rows(clean.source, "SELECT kind, server, dropped_at IS NOT NULL "
                      "FROM hotdata.drill_databases WHERE name = %s", (str(root),)) == [
        ("cluster", socket.gethostname(), True)]
    assert clean.before == clean.after
    alive = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, check=False)
    assert alive.returncode == 1, alive.stdout  # no server of the copy left running


def test_pgbackrest_needs_a_stanza_and_reports_an_unknown_one(stanza: Stanza) -> None:
    with pytest.raises(runner.DrillRefused, match="HOTDATA_DRILL_PGBACKREST_STANZA"):
        asyncio.run(runner.run(stanza.settings(drill_pgbackrest_stanza=None)))
    result = asyncio.run(runner.run(stanza.settings(drill_pgbackrest_stanza="nope")))
    assert result.status == "failed"
    backup = check(result, "backup")
    assert not backup.ok and "nope" in backup.detail, backup
    assert not Path(result.scratch_database or "").exists()


def test_a_backup_whose_wal_is_not_archived_is_refused(stanza: Stanza) -> None:
    """A repository that lost the WAL after a backup cannot restore it consistently: the drill
    is red before anything is restored, and says which segments are missing."""
    broken = stanza.base / "broken"
    shutil.copytree(stanza.base / "repo", broken / "repo")
    if stanza.run_as:
        subprocess.run(["chown", "-R", stanza.run_as, str(broken)], check=True)
    for segment in (broken / "repo" / "archive").rglob("0000000*"):
        if segment.is_file():
            segment.unlink()
    config = broken / "pgbackrest.conf"
    config.write_text(stanza.config.read_text().replace(f"repo1-path={stanza.base / 'repo'}",
                                                        f"repo1-path={broken / 'repo'}"))
    result = asyncio.run(runner.run(stanza.settings(drill_pgbackrest_config=config)))
    assert result.status == "failed"
    backup = check(result, "backup")
    assert "cannot reach a consistent state" in backup.detail, backup
    assert [p.name for p in result.phases] == []


def test_start_up_removes_a_crashed_drills_running_copy(stanza: Stanza) -> None:
    """What a killed bot leaves: a recorded copy whose server still runs. The next start stops
    it and deletes it, unless a drill is running; also when it was recorded under an older
    host name (containers get a new one at each start). A copy recorded by another host and
    not on this one is left to that host."""
    leftover = pgcluster.create()  # a running server in a directory, as a crashed drill leaves
    elsewhere = stanza.base / "restores" / "on-another-host"
    with psycopg.connect(stanza.source.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO hotdata.drill_databases (name, server, kind) VALUES "
                     "(%s, 'before-a-restart', 'cluster'), (%s, 'another-host', 'cluster')",
                     (str(leftover.root), str(elsewhere)))
    try:
        # while a drill runs (here: its lock is held), its scratch is not a leftover
        with psycopg.connect(stanza.source.dsn, autocommit=True) as drilling:
            drilling.execute("SELECT pg_advisory_lock(%s, %s)", locks.DRILL)
            assert asyncio.run(runner.clean_leftovers(stanza.settings())) == []
            assert leftover.root.exists()
        dropped = asyncio.run(runner.clean_leftovers(stanza.settings()))
        assert dropped == [str(leftover.root)]
        assert not leftover.root.exists()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(leftover.dsn(), connect_timeout=2)
        assert state_rows(stanza.source, "SELECT dropped_at FROM hotdata.drill_databases "
                          "WHERE name = %s", (str(elsewhere),)) == [(None,)]
    finally:
        leftover.destroy()
        with psycopg.connect(stanza.source.dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM hotdata.drill_databases WHERE name = %s",
                         (str(elsewhere),))


def test_a_restore_directory_already_there_is_refused_and_kept(stanza: Stanza) -> None:
    """Whatever sits where a drill would restore (a directory, a link) is not the drill's: the
    drill is red and it stays."""
    restores = stanza.base / "restores"
    with psycopg.connect(stanza.source.dsn, autocommit=True) as conn:
        [(next_id, token)] = conn.execute(
            "SELECT last_value + 1, (SELECT token FROM hotdata.installation) "
            "FROM hotdata.drills_id_seq").fetchall()
    taken = restores / f"hotdata_drill_{token}_{next_id}"
    taken.symlink_to(stanza.base / "repo")
    try:
        result = asyncio.run(runner.run(stanza.settings()))
        assert result.id == next_id and result.status == "failed"
        assert "already exists" in check(result, "restore").detail
        assert taken.is_symlink() and (stanza.base / "repo" / "archive").exists()
        assert state_rows(stanza.source, "SELECT count(*) FROM hotdata.drill_databases "
                          "WHERE name = %s", (str(taken),)) == [(0,)]
    finally:
        taken.unlink()


async def test_a_drill_cancelled_midway_through_the_restore_leaves_nothing(
        stanza: Stanza) -> None:
    """Cancelled while pgbackrest is writing the copy: no process, no directory, the drill
    recorded as failed (interrupted), the copy recorded as removed."""
    settings = stanza.settings()
    task = asyncio.create_task(runner.run(settings))
    deadline = time.monotonic() + 60
    root = None
    while root is None or not (root / "data").exists():
        assert time.monotonic() < deadline, "the restore never started"
        assert not task.done(), task.result()
        rows = state_rows(stanza.source, "SELECT name FROM hotdata.drill_databases "
                          "WHERE dropped_at IS NULL AND kind = 'cluster'")
        root = Path(rows[0][0]) if rows else None
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not root.exists()
    assert subprocess.run(["pgrep", "-f", str(root)], capture_output=True,
                          check=False).returncode == 1
    [(dropped,)] = state_rows(stanza.source, "SELECT dropped_at IS NOT NULL FROM "
                              "hotdata.drill_databases WHERE name = %s", (str(root),))
    assert dropped
    [(status, stored)] = state_rows(stanza.source, "SELECT status, result FROM hotdata.drills "
                                    "WHERE scratch_database = %s OR id = %s",
                                    (str(root), int(root.name.rsplit("_", 1)[1])))
    assert status == "failed"
    assert {"name": "drill", "ok": False, "detail": "interrupted: cancelled"} in stored["checks"]


def test_runbook_names_the_pgbackrest_commands(clean: CleanDrill) -> None:
    section = render.runbook_section(clean.result.as_dict(), "today", "PostgreSQL 15")
    assert "(source `pgbackrest`)" in section and "pgbackrest restore" in section
    assert "pg_dump" not in section


def test_a_copy_that_does_not_start_fails_with_the_servers_reason() -> None:
    """What a copy needing a library this machine lacks does: RecoveryFailed quoting the log."""
    cluster = pgcluster.create()
    try:
        cluster.stop()
        with open(cluster.datadir / "postgresql.auto.conf", "a") as fh:
            fh.write("shared_preload_libraries = 'hotdata_no_such_library'\n")
        copy = pgcluster.Cluster(cluster.bindir, cluster.root / "again", pgcluster.free_port(),
                                 cluster.run_as)
        copy.root.mkdir()
        pgcluster.chown(copy.root, copy.run_as)
        cluster.datadir.rename(copy.datadir)
        with pytest.raises(pgbackrest.RecoveryFailed, match="hotdata_no_such_library"):
            asyncio.run(pgbackrest.recover(copy, "postgres", None, timeout=30))
    finally:
        cluster.destroy()


# --- point-in-time drills (last: their WAL switches grow the archive) ---------------------------

def test_a_random_point_in_time_drill_stops_at_its_target(stanza: Stanza) -> None:
    with heartbeats(stanza.source) as written:
        result = asyncio.run(runner.run(stanza.settings(drill_target="random")))
        finished = datetime.now(UTC)
    assert_stopped_at_target(result, written, finished)


def test_point_in_time_targets_outside_the_window_or_without_pgbackrest_are_refused(
        stanza: Stanza) -> None:
    early = asyncio.run(runner.run(stanza.settings(drill_target="2001-01-01T00:00:00+00:00")))
    assert early.status == "failed"
    assert "outside the recoverable window" in check(early, "backup").detail
    with pytest.raises(runner.DrillRefused, match="needs the pgbackrest source"):
        asyncio.run(runner.run(stanza.settings(drill_source="dump", drill_target="random")))
    with pytest.raises(ValueError, match="time zone"):
        stanza.settings(drill_target="2026-12-04 03:00:00")


def test_a_pgbackrest_too_old_for_the_server_fails_naming_both_versions() -> None:
    """What pgBackRest 2.45 says of PostgreSQL 18 becomes a failure naming both versions."""
    said = ("WARN: unable to check pg1: [VersionNotSupportedError] unexpected control version "
            "= 1800 and catalog version = 202506291\n"
            "ERROR: [056]: unable to find primary cluster - cannot proceed\n")
    ours = subprocess.run([tools.find("pgbackrest"), "version"], capture_output=True,
                          text=True, timeout=30, check=True).stdout.strip()
    message = asyncio.run(pgbackrest.unsupported(said, 18, pgcluster.server_user()))
    assert message is not None and message.startswith(
        f"{ours} does not support PostgreSQL 18: "), message
    assert "unexpected control version = 1800" in message
    assert asyncio.run(pgbackrest.unsupported("ERROR: [055]: unable to load info file", 18,
                                              None)) is None
