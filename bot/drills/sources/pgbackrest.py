"""`pgbackrest`: restore the newest backup of a pgBackRest stanza into a private data directory,
start it on a private port and let it replay the archived WAL to its end, then promote.

- The recovery target is the end of the archive (`--type=default`): the newest point the
  archive can reach, so it is inside the archived range by construction; or a moment
  (`--type=time`, HOTDATA_DRILL_TARGET) restored from the newest backup that ended before it.
  A backup whose WAL is not all archived is refused before anything is restored.
- `--archive-mode=off`: the copy never pushes WAL into the team's repository.
- The copy is started, verified and removed as every physical copy is (physical.py); it
  runs as ourselves, or as the `postgres` user when we are root.
- A pgBackRest older than the stanza's PostgreSQL (Debian 12's 2.45 and PostgreSQL 18) says
  so in its own words; the drill fails saying which pgBackRest and which PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from bot import pgcluster, tools
from bot.drills.model import Backup
from bot.drills.sources import NoBackup, physical
from bot.drills.sources.physical import RESTORE_TIMEOUT_S, Latest
from bot.drills.sources.physical import RecoveryFailed as RecoveryFailed  # callers catch it here
from bot.drills.verify import RestoreFailed
from bot.settings import Settings

# How pgBackRest says it does not know a PostgreSQL version (its pg_control, its catalog).
UNSUPPORTED = ("VersionNotSupportedError", "is this version of PostgreSQL supported")


def owner(settings: Settings) -> str | None:
    """pgBackRest restores as whoever runs it: the copy runs as PostgreSQL's user."""
    return pgcluster.server_user()


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


async def fetch(settings: Settings, root: Path, run_as: str | None, newest: Latest,
                target: datetime | None = None
                ) -> tuple[Backup, pgcluster.Cluster, Latest]:
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
    return (Backup("pgbackrest", copy.datadir, None, newest.stopped_at, None, newest.bytes),
            copy, newest)


async def recover(copy: pgcluster.Cluster, dbname: str, known_user: str | None, *,
                  timeout: float = RESTORE_TIMEOUT_S) -> str:
    """physical.recover; a restore_command that refused the copy's PostgreSQL version is
    reported in pgBackRest's words."""
    return await physical.recover(copy, dbname, known_user, timeout=timeout,
                                  explain=_unsupported_in_log)


async def _unsupported_in_log(copy: pgcluster.Cluster) -> str | None:
    """The copy's restore_command (pgbackrest archive-get) refused its PostgreSQL version."""
    try:
        log = copy.logfile.read_text(errors="replace")
    except OSError:
        return None
    return await unsupported(log, pgcluster.server_major(copy.bindir), copy.run_as)
