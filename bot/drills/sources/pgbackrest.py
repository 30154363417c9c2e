"""`pgbackrest`: restore the newest backup of a pgBackRest stanza into a private data directory,
start it on a private port and let it replay the archived WAL to its end, then promote.

- The recovery target is the end of the archive (`--type=default`): the newest point the
  archive can reach, so it is inside the archived range by construction; or a moment
  (`--type=time`, HOTDATA_DRILL_TARGET) restored from the newest backup that ended before it.
  A backup whose WAL is not all archived is refused before anything is restored.
- `--archive-mode=off`: the copy never pushes WAL into the team's repository.
- The copy listens only on a Unix socket in a directory no one else may enter, with its own
  `hba_file` (trust for local connections), so nothing but hotdata can reach it; SSL and the
  source's own files (certificates, includes) are switched off or replaced.
- It runs as PostgreSQL must: as ourselves, or as the `postgres` user when we are root.
- A pgBackRest older than the stanza's PostgreSQL (Debian 12's 2.45 and PostgreSQL 18) says
  so in its own words; the drill fails saying which pgBackRest and which PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bot import pgcluster, tools
from bot.drills.model import Backup
from bot.drills.sources import NoBackup
from bot.drills.verify import RestoreFailed
from bot.settings import Settings

RESTORE_TIMEOUT_S = 6 * 3600
PROMOTE_POLL_S = 0.2
# How pgBackRest says it does not know a PostgreSQL version (its pg_control, its catalog).
UNSUPPORTED = ("VersionNotSupportedError", "is this version of PostgreSQL supported")
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


def _options(settings: Settings) -> list[str]:
    found = [f"--stanza={settings.drill_pgbackrest_stanza}"]
    if settings.drill_pgbackrest_config is not None:
        found.append(f"--config={settings.drill_pgbackrest_config}")
    return found


async def _pgbackrest(settings: Settings, *args: str, run_as: str | None,
                      timeout: float = 600) -> tools.Result:
    return await tools.run("pgbackrest", *_options(settings), "--log-level-console=warn",
                           *args, timeout=timeout, env=tools.clean_env(), user=run_as)


async def unsupported(output: str, major: int | None, run_as: str | None) -> str | None:
    """When pgBackRest's `output` says it does not support the server's PostgreSQL version:
    that, naming both versions; else None."""
    if not any(marker in output for marker in UNSUPPORTED):
        return None
    try:
        asked = await tools.run("pgbackrest", "version", timeout=30, user=run_as)
        ours = asked.stdout.strip() or "this pgBackRest"  # "pgBackRest 2.45"
    except tools.ToolMissing:
        ours = "this pgBackRest"
    server = f"PostgreSQL {major}" if major else "the stanza's PostgreSQL version"
    said = next(line.strip() for line in output.splitlines()
                if any(marker in line for marker in UNSUPPORTED))
    return (f"{ours} does not support {server}: install a pgBackRest release that does where "
            f"hotdata runs (pgBackRest said: {' '.join(said.split())[:200]})")


async def backups(settings: Settings, run_as: str | None) -> list[Latest]:
    """The stanza's backups, oldest first (`pgbackrest info`)."""
    done = await _pgbackrest(settings, "--output=json", "info", run_as=run_as)
    if done.returncode != 0:
        raise NoBackup(await unsupported(done.stderr + done.stdout, None, run_as)
                       or f"pgbackrest info failed: {done.stderr.strip()[-500:]}")
    stanzas = json.loads(done.stdout or "[]")
    if not stanzas:
        raise NoBackup(f"pgBackRest knows no stanza {settings.drill_pgbackrest_stanza!r}")
    stanza = stanzas[0]
    if stanza["status"]["code"] != 0 or not stanza.get("backup"):
        raise NoBackup(f"stanza {stanza['name']!r} has no usable backup: "
                       f"{stanza['status']['message']}")
    found = []
    for backup in stanza["backup"]:
        archives = [a for a in stanza.get("archive", [])
                    if a["database"]["id"] == backup["database"]["id"] and a.get("max")]
        db = next(d for d in stanza["db"] if d["id"] == backup["database"]["id"])
        found.append(Latest(backup["label"],
                            datetime.fromtimestamp(backup["timestamp"]["stop"], UTC),
                            int(str(db["version"]).split(".")[0]), int(backup["info"]["size"]),
                            max((a["max"] for a in archives), default=""),
                            backup["archive"]["stop"]))
    return found


def choose(found: list[Latest], target: datetime | None) -> Latest:
    """The backup to restore: the newest, or the newest that ended before `target`; refused
    unless all the WAL it needs is archived."""
    usable = [b for b in found if target is None or b.stopped_at <= target]
    if not usable:
        raise NoBackup(f"no backup ends before {target:%Y-%m-%d %H:%M:%S %Z}: the oldest ends "
                       f"at {found[0].stopped_at:%Y-%m-%d %H:%M:%S %Z}")
    backup = usable[-1]
    # Segment names sort in WAL order within a timeline history (timeline, log, segment).
    if backup.archive_max < backup.archive_stop:
        raise NoBackup(f"backup {backup.label} needs WAL up to {backup.archive_stop} "
                       f"but the archive ends at {backup.archive_max or 'nothing'}: it cannot "
                       "reach a consistent state")
    return backup


def prepare(root: Path) -> str | None:
    """Make `root` for a copy, refusing anything already there; the user the copy runs as."""
    run_as = pgcluster.server_user()
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        root.mkdir()
    except FileExistsError:
        raise RestoreFailed(f"{root} already exists: remove it or set "
                            "HOTDATA_DRILL_RESTORE_DIR to another directory") from None
    pgcluster.chown(root, run_as)
    return run_as


async def fetch(settings: Settings, root: Path, run_as: str | None, newest: Latest,
                target: datetime | None = None) -> tuple[Backup, pgcluster.Cluster]:
    """Restore the files of backup `newest` into `root`/data (recovery has not run yet), to
    replay the archive to its end or, with `target`, to that moment and promote there."""
    bindir = pgcluster.find_bindir(newest.major)
    copy = pgcluster.Cluster(bindir, root, pgcluster.free_port(), run_as)
    recovery = (["--type=default"] if target is None else [
        "--type=time", f"--target={target.isoformat(sep=' ')}", "--target-action=promote"])
    done = await _pgbackrest(settings, f"--pg1-path={copy.datadir}", f"--set={newest.label}",
                             *recovery, "--archive-mode=off", "restore",
                             run_as=run_as, timeout=RESTORE_TIMEOUT_S)
    if done.returncode != 0:
        raise RestoreFailed(await unsupported(done.stderr + done.stdout, newest.major, run_as)
                            or f"pgbackrest restore of {newest.label} failed: "
                               f"{done.stderr.strip()[-500:]}")
    return Backup("pgbackrest", copy.datadir, None, newest.stopped_at, None, newest.bytes), copy


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


async def recover(copy: pgcluster.Cluster, dbname: str, known_user: str | None, *,
                  timeout: float = RESTORE_TIMEOUT_S) -> str:
    """Start the copy and wait until it has replayed the archive and promoted itself; the
    copy's bootstrap superuser, to verify it as.

    The copy accepts connections once consistent, still replaying: `pg_is_in_recovery()` says
    when recovery and its end-of-recovery checkpoint are done. The first connection is as a
    role the source is known to have (only we may reach the socket, without passwords)."""
    _configure(copy)
    started = await tools.run(str(copy.bindir / "pg_ctl"), "-D", str(copy.datadir),
                              "-l", str(copy.logfile), "-w", "-t", str(int(timeout)), "start",
                              timeout=timeout + 30, env=tools.clean_env(), user=copy.run_as)
    if started.returncode != 0:
        raise RecoveryFailed(await _unsupported_in_log(copy)
                             or f"the restored copy did not start: {_log_tail(copy)}")
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
        raise RecoveryFailed(await _unsupported_in_log(copy) or (
            f"the restored copy is unreachable ({' '.join(str(error).split())}): "
            f"{_log_tail(copy)}")) from None


async def _unsupported_in_log(copy: pgcluster.Cluster) -> str | None:
    """The copy's restore_command (pgbackrest archive-get) refused its PostgreSQL version."""
    try:
        log = copy.logfile.read_text(errors="replace")
    except OSError:
        return None
    return await unsupported(log, pgcluster.server_major(copy.bindir), copy.run_as)


def _log_tail(copy: pgcluster.Cluster) -> str:
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
