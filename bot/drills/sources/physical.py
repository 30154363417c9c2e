"""What the physical-backup sources (`pgbackrest`, `barman`) share: a backup in a repository,
the one a drill restores, the private directory it is restored into, starting the copy until
it has recovered, and removing it.

- The copy listens only on a Unix socket in a directory no one else may enter, with its own
  `hba_file` (trust for local connections), so nothing but hotdata can reach it; SSL and the
  source's own files (certificates, includes) are switched off or replaced, and it never
  archives WAL.
- It runs as PostgreSQL must: never as root; as the user its source says (`owner`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import psycopg

from bot import pgcluster, tools
from bot.drills.model import Backup
from bot.drills.sources import NoBackup
from bot.drills.verify import RestoreFailed
from bot.settings import Settings

RESTORE_TIMEOUT_S = 6 * 3600
PROMOTE_POLL_S = 0.2
# What the copy must not inherit from the source's configuration.
OVERRIDES = {
    "listen_addresses": "''",
    "unix_socket_permissions": "0700",
    "ssl": "off",
    "logging_collector": "off",
    "archive_mode": "off",
    "shared_buffers": "'128MB'",
}


class RecoveryFailed(Exception):
    """The restored copy did not start or did not finish recovery; carries the server log."""


@dataclass(frozen=True)
class Latest:
    """A backup in the repository (the one a drill restores), and what the archive holds."""

    label: str
    stopped_at: datetime
    major: int
    bytes: int
    archive_max: str  # the newest WAL segment archived
    archive_stop: str = ""  # the last WAL segment the backup itself needs


class Repository(Protocol):
    """A source of physical backups (a module: `pgbackrest`, `barman`)."""

    def owner(self, settings: Settings) -> str | None:
        """The user the restored files belong to and the copy runs as (None: ourselves)."""

    async def backups(self, settings: Settings, run_as: str | None) -> list[Latest]:
        """The backups a drill may restore, oldest first; NoBackup when there is none."""

    async def fetch(self, settings: Settings, root: Path, run_as: str | None, newest: Latest,
                    target: datetime | None) -> tuple[Backup, pgcluster.Cluster, Latest]:
        """`newest` restored into `root`/data, recovery not run yet; `newest` as restored."""

    async def recover(self, copy: pgcluster.Cluster, dbname: str,
                      known_user: str | None) -> str:
        """`recover` below, with what the source knows of its failures."""


def choose(found: list[Latest], target: datetime | None) -> Latest:
    """The backup to restore: the newest, or the newest that ended before `target`; refused
    unless all the WAL it needs is archived."""
    usable = [b for b in found if target is None or b.stopped_at <= target]
    if not usable:
        raise NoBackup(f"no backup ends before {target:%Y-%m-%d %H:%M:%S %Z}: the oldest ends "
                       f"at {found[0].stopped_at:%Y-%m-%d %H:%M:%S %Z}")
    return consistent(usable[-1])


def consistent(backup: Latest) -> Latest:
    """`backup`, unless the WAL it needs to be consistent is not all archived."""
    # Segment names sort in WAL order within a timeline history (timeline, log, segment).
    if backup.archive_max < backup.archive_stop:
        raise NoBackup(f"backup {backup.label} needs WAL up to {backup.archive_stop} "
                       f"but the archive ends at {backup.archive_max or 'nothing'}: it cannot "
                       "reach a consistent state")
    return backup


def prepare(root: Path, run_as: str | None) -> None:
    """Make `root` for a copy run as `run_as`, refusing anything already there."""
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        root.mkdir()
    except FileExistsError:
        raise RestoreFailed(f"{root} already exists: remove it or set "
                            "HOTDATA_DRILL_RESTORE_DIR to another directory") from None
    pgcluster.chown(root, run_as)


def _configure(copy: pgcluster.Cluster) -> None:
    copy.socket_dir.mkdir(mode=0o700)
    hba, ident = copy.root / "hba.conf", copy.root / "ident.conf"
    hba.write_text("local all all trust\n")
    ident.write_text("")
    conf = copy.datadir / "postgresql.conf"
    if not conf.exists():  # Debian keeps it in /etc: the data directory has none
        conf.write_text("")
    settings = {**OVERRIDES, "port": str(copy.port),
                "unix_socket_directories": _quote(copy.socket_dir),
                "hba_file": _quote(hba), "ident_file": _quote(ident)}
    # postgresql.auto.conf is read last: these win over anything the source configured.
    with open(copy.datadir / "postgresql.auto.conf", "a") as fh:
        fh.write("\n# hotdata restore drill: a private copy\n")
        fh.writelines(f"{key} = {value}\n" for key, value in settings.items())
    for path in (copy.socket_dir, hba, ident, conf):
        pgcluster.chown(path, copy.run_as)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


Explain = Callable[[pgcluster.Cluster], Awaitable[str | None]]


async def recover(copy: pgcluster.Cluster, dbname: str, known_user: str | None, *,
                  timeout: float = RESTORE_TIMEOUT_S, explain: Explain | None = None) -> str:
    """Start the copy and wait until it has recovered (replayed the WAL it was given to its
    end, or to its target) and left recovery; the copy's bootstrap superuser, to verify it as.

    The copy accepts connections once consistent, still replaying: `pg_is_in_recovery()` says
    when recovery and its end-of-recovery checkpoint are done. The first connection is as a
    role the source is known to have (only we may reach the socket, without passwords).
    `explain` reads a failure in the copy's log in the source's own words, when it can."""
    _configure(copy)
    started = await tools.run(str(copy.bindir / "pg_ctl"), "-D", str(copy.datadir),
                              "-l", str(copy.logfile), "-w", "-t", str(int(timeout)), "start",
                              timeout=timeout + 30, env=tools.clean_env(), user=copy.run_as)
    if started.returncode != 0:
        raise RecoveryFailed((explain and await explain(copy))
                             or f"the restored copy did not start: {log_tail(copy)}")
    deadline = time.monotonic() + timeout
    try:
        conn = await psycopg.AsyncConnection.connect(
            copy.socket_dsn(dbname, known_user or pgcluster.SUPERUSER), autocommit=True,
            connect_timeout=10)
        async with conn:
            while True:
                cur = await conn.execute("SELECT pg_is_in_recovery(), (SELECT rolname "
                                         "FROM pg_roles WHERE oid = 10)")
                row = await cur.fetchone()
                assert row is not None
                if not row[0]:
                    return str(row[1])
                if time.monotonic() > deadline:
                    raise RecoveryFailed(f"recovery did not finish in {timeout:.0f} s")
                await asyncio.sleep(PROMOTE_POLL_S)
    except psycopg.OperationalError as error:  # the copy stopped, or refuses us
        raise RecoveryFailed((explain and await explain(copy)) or (
            f"the restored copy is unreachable ({' '.join(str(error).split())}): "
            f"{log_tail(copy)}")) from None


def log_tail(copy: pgcluster.Cluster) -> str:
    """The copy's last errors (or last lines) from its server log."""
    try:
        lines = copy.logfile.read_text(errors="replace").splitlines()
    except OSError:
        return "no server log"
    wanted = [line for line in lines if any(k in line for k in ("FATAL", "PANIC", "ERROR"))]
    return " ".join((wanted or lines)[-4:])[-600:]


async def remove(root: Path) -> None:
    """Stop the copy's server if it runs (immediately: it is thrown away) and delete `root`
    (a link put in its place is removed, never followed)."""
    if root.is_symlink():
        root.unlink()
        return
    pid = _postmaster(root / "data")
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        for _ in range(300):
            if not _alive(pid):
                break
            await asyncio.sleep(0.1)
    await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)


def _postmaster(datadir: Path) -> int | None:
    """The pid in postmaster.pid, when that process is still this data directory's server."""
    try:
        pid_line, dir_line = (datadir / "postmaster.pid").read_text().splitlines()[:2]
    except (OSError, ValueError):
        return None
    if Path(dir_line).resolve() != datadir.resolve() or not pid_line.strip().isdigit():
        return None
    pid = int(pid_line)
    try:  # after a reboot the pid may belong to someone else
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid if _alive(pid) else None
    return pid if b"postgres" in cmdline else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
