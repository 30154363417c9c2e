"""Restore drills from a Barman server: a source cluster whose archive_command copies its WAL
into Barman's incoming directory, a real backup by Barman (`backup_method = postgres`:
pg_basebackup), writes after it that only the archived WAL holds, and drills that restore,
replay, verify and remove the copy; and drills that fail in Barman's own words."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bot import pgcluster, tools
from bot.drills import history as drill_history
from bot.drills import runner
from bot.drills.sources import NoBackup
from bot.render import drill as render
from bot.settings import Settings
from tests.test_drills import (
    DESIGN_KEYS,
    Source,
    check,
    create_source,
    exact_counts,
    state_rows,
)
from tests.test_drills_pgbackrest import (
    CleanDrill,
    assert_stopped_at_target,
    beat,
    clean_drill,
    heartbeats,
    wait_archived,
)

SERVER = "app"


@dataclass
class Barman:
    base: Path  # configuration, Barman's home and log, the drills' restore directory
    source: Source
    run_as: str | None

    @property
    def config(self) -> Path:
        return self.base / "barman.conf"

    def settings(self, **extra: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.source.url, "drill_source": "barman",
            "drill_barman_server": SERVER, "drill_barman_config": self.config,
            "drill_restore_dir": self.base / "restores", "app_role": "authenticated",
            "app_jwt_claims": json.dumps({"sub": self.source.heavy_user}), **extra}
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def barman(self, *args: str, config: Path | None = None) -> str:
        done = subprocess.run([tools.find("barman"), "-c", str(config or self.config), *args],
                              user=self.run_as, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, done.stderr + done.stdout
        return done.stdout

    def another_config(self, name: str, home: Path | None = None, extra: str = "") -> Path:
        """A configuration of the same server with another Barman home or more settings."""
        path = self.base / f"{name}.conf"
        write_config(path, self.base, home or self.base / "home", self.source.pg, extra)
        return path


def write_config(path: Path, base: Path, home: Path, cluster: pgcluster.Cluster,
                 extra: str = "") -> None:
    user = cluster.run_as or pwd.getpwuid(os.getuid()).pw_name
    conninfo = (f"host={cluster.socket_dir} port={cluster.port} user={cluster.superuser} "
                "dbname=postgres")
    # path_prefix: the pg_basebackup of the cluster's own PostgreSQL version
    path.write_text(f"""[barman]
barman_user = {user}
barman_home = {home}
log_file = {base / "barman.log"}
log_level = WARNING

[{SERVER}]
description = a hotdata test cluster
conninfo = {conninfo}
streaming_conninfo = {conninfo}
backup_method = postgres
archiver = on
path_prefix = {cluster.bindir}
{extra}""")
    pgcluster.chown(path, cluster.run_as)


def allow_replication(cluster: pgcluster.Cluster) -> None:
    """pg_basebackup needs a replication connection: allow it on the socket, and wait until
    the server lets one in."""
    with open(cluster.datadir / "pg_hba.conf", "a") as fh:
        fh.write("local replication all trust\n")
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(cluster.socket_dsn(), replication="true").close()
            return
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "replication connections stayed refused"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[Barman]:
    """A cluster archiving its WAL into Barman, a source database in it, a Barman backup,
    then rows and a heartbeat only the archived WAL carries."""
    run_as = pgcluster.server_user()
    base = Path(tempfile.mkdtemp(prefix="hotdata-barman-"))
    incoming = base / "home" / SERVER / "incoming"
    for path in (base, base / "restores", base / "home", base / "home" / SERVER, incoming):
        path.mkdir(exist_ok=True)
        pgcluster.chown(path, run_as)
    cluster = pgcluster.create({"wal_level": "replica", "archive_mode": "on",
                                "archive_command": f"'cp %p {incoming}/%f'"})
    try:
        allow_replication(cluster)
        write_config(base / "barman.conf", base, base / "home", cluster)
        made = Barman(base, create_source(cluster), run_as)
        # Barman's check wants a WAL file archived before the first backup.
        made.barman("switch-wal", "--force", "--archive", "--archive-timeout", "60", SERVER)
        made.barman("backup", SERVER)
        with psycopg.connect(made.source.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO notifications (user_id, kind, body, read, created_at) "
                         "SELECT user_id, kind, 'after the backup', false, now() "
                         "FROM notifications LIMIT 25")
        asyncio.run(beat(made.settings()))
        wait_archived(made.source)  # into Barman's incoming directory; recover files it
        yield made
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def clean(server: Barman) -> CleanDrill:
    return clean_drill(server.source, server.base, server.settings())


def test_barman_drill_restores_replays_and_verifies_tables_and_rls(clean: CleanDrill) -> None:
    result = clean.result
    assert result.status == "passed", [c for c in result.checks if not c.ok]
    shape = json.loads(render.as_json(result))
    assert set(shape) >= DESIGN_KEYS and shape["source"] == "barman"
    assert [p["name"] for p in shape["phases"]] == ["fetch", "restore", "verify"]
    assert {"recovery", "row counts", "RLS policies", "grants", "RLS probes",
            "amcheck"} <= {c["name"] for c in shape["checks"]}
    recovery = check(result, "recovery")
    assert recovery.ok and "replayed to its end" in recovery.detail, recovery
    # The rows written after the backup are in the copy: it replayed the archived WAL.
    counts = exact_counts(clean.source)
    assert result.tables_verified == len(counts)
    assert result.rows_verified == sum(counts.values())
    rows = check(result, "row counts")
    assert rows.ok and "older than the source" not in rows.detail, rows
    probes = check(result, "RLS probes")
    assert probes.ok and probes.detail.startswith("4 probes"), probes
    assert result.bytes_restored > 10 * 2**20
    # the runbook's "last measured" section names Barman's commands
    section = render.runbook_section(shape, "2026-12-04 03:00 UTC", "PostgreSQL")
    assert "- commands: `barman check`, `barman list-backups`, `barman recover <the newest " \
           "backup> <directory>`" in section


def test_barman_rpo_is_the_replayed_heartbeat_and_the_rto_is_measured(
        clean: CleanDrill) -> None:
    result = clean.result
    rpo, age = result.rpo_seconds, result.backup_age_seconds
    assert rpo is not None and age is not None and rpo < age
    low = (clean.started - clean.heartbeat).total_seconds()
    high = (clean.finished - clean.heartbeat).total_seconds()
    assert low - 0.05 <= rpo <= high + 0.05
    assert result.rto_seconds is not None
    assert 0 < result.rto_seconds <= (clean.finished - clean.started).total_seconds()


def test_barman_drill_removes_its_copy_and_writes_nothing_to_the_source(
        clean: CleanDrill) -> None:
    root = Path(clean.result.scratch_database or "")
    assert root.parent == clean.base / "restores" and not root.exists()
    assert state_rows(clean.source, "SELECT kind, server, dropped_at IS NOT NULL "
                      "FROM hotdata.drill_databases WHERE name = %s", (str(root),)) == [
        ("cluster", socket.gethostname(), True)]
    assert clean.before == clean.after
    alive = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, check=False)
    assert alive.returncode == 1, alive.stdout


def test_barman_needs_a_server_and_reports_an_unknown_one(server: Barman) -> None:
    with pytest.raises(runner.DrillRefused, match="HOTDATA_DRILL_BARMAN_SERVER"):
        asyncio.run(runner.run(server.settings(drill_barman_server=None)))
    result = asyncio.run(runner.run(server.settings(drill_barman_server="nope")))
    assert result.status == "failed"
    backup = check(result, "backup")
    assert not backup.ok and "nope" in backup.detail, backup
    assert not Path(result.scratch_database or "").exists()


def test_backup_alerts_read_the_newest_backups_age_from_barman(server: Barman) -> None:
    """Between drills, the backup-age alert asks Barman's catalog; a failing `barman check`
    is a backup problem it names."""
    newest = asyncio.run(drill_history.newest_backup(server.settings()))
    assert newest is not None and timedelta(0) < datetime.now(UTC) - newest < timedelta(hours=1)
    strict = server.another_config("strict-age", extra="minimum_redundancy = 5\n")
    with pytest.raises(NoBackup, match=f"barman check {SERVER} failed: minimum redundancy"):
        asyncio.run(drill_history.newest_backup(server.settings(drill_barman_config=strict)))


def test_a_failing_barman_check_fails_the_drill_naming_the_check(server: Barman) -> None:
    """What `barman check` fails, the drill fails, before anything is restored."""
    strict = server.another_config("strict", extra="minimum_redundancy = 5\n")
    result = asyncio.run(runner.run(server.settings(drill_barman_config=strict)))
    assert result.status == "failed" and result.phases == []
    backup = check(result, "backup")
    assert backup.detail.startswith(f"barman check {SERVER} failed: "), backup
    # Barman counts only backups it has validated (PostgreSQL 18's waits for its next WAL file)
    assert re.search(r"minimum redundancy requirements: FAILED \(have [01] backups, expected "
                     r"at least 5\)", backup.detail), backup


def test_a_backup_whose_wal_barman_lost_fails_naming_the_files(server: Barman) -> None:
    """Barman's catalog still lists the WAL, its archive lost the files: the drill is red and
    says which are gone."""
    server.barman("archive-wal", SERVER)  # everything archived so far is in Barman's archive
    broken = server.base / "broken"
    shutil.copytree(server.base / "home", broken)
    if server.run_as:
        subprocess.run(["chown", "-R", server.run_as, str(broken)], check=True)
    lost = sorted(p.name for p in (broken / SERVER / "wals").rglob("0000000*")
                  if p.is_file() and len(p.name) == 24)
    assert lost
    for name in lost:
        (broken / SERVER / "wals" / name[:16] / name).unlink()
    try:
        result = asyncio.run(runner.run(server.settings(
            drill_barman_config=server.another_config("broken", home=broken))))
    finally:
        shutil.rmtree(broken)
    assert result.status == "failed"
    backup = check(result, "backup")
    assert "Barman's catalog lists WAL files its archive no longer holds: " + lost[0] \
        in backup.detail, backup
    assert not Path(result.scratch_database or "").exists()


# --- a point-in-time drill (last: its WAL switches grow the archive) ----------------------------

def test_a_random_point_in_time_barman_drill_stops_at_its_target(server: Barman) -> None:
    with heartbeats(server.source) as written:
        result = asyncio.run(runner.run(server.settings(drill_target="random")))
        finished = datetime.now(UTC)
    assert_stopped_at_target(result, written, finished)
