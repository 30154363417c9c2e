"""`barman`: restore the newest backup of a Barman server into a private data directory with
`barman recover`, then start, verify and remove it as every physical copy (physical.py).

- `barman check` runs first: a check Barman fails fails the drill, named in Barman's words.
- The newest backup: `barman recover` copies it and every WAL file Barman holds after it into
  `pg_wal`, and the copy replays them to their end (the archive's end) before it opens. A
  moment (HOTDATA_DRILL_TARGET): the newest backup that ended before it, with
  `--target-time … --target-action promote` (the WAL up to it replayed through Barman's
  `restore_command`). Barman itself first files the WAL waiting in its incoming directory.
- WAL files Barman's catalog lists but its archive lost fail the drill, naming them; so does
  a backup whose last WAL file (its `end_wal`) Barman did not restore.
- Barman runs only as its `barman_user` (or as root, which it leaves for that user), and the
  files it restores are that user's: as root we run Barman and the copy as that user; else
  both run as ourselves (and Barman refuses unless we are its user, saying so).
- Barman sets `archive_command = false` in the copy, and the copy's archive_mode is off.
"""

from __future__ import annotations

import configparser
import json
import os
import pwd
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bot import pgcluster, tools
from bot.drills.model import Backup
from bot.drills.sources import NoBackup, physical
from bot.drills.sources.physical import RESTORE_TIMEOUT_S, Latest
from bot.drills.verify import RestoreFailed
from bot.settings import Settings

# Where Barman looks for its configuration when not told (barman.config.Config).
CONFIG_FILES = ("~/.barman.conf", "/etc/barman.conf", "/etc/barman/barman.conf")
RESTORABLE = ("DONE", "WAITING_FOR_WALS")  # WAITING: Barman files the WAL at recover time
SEGMENT = re.compile(r"[0-9A-F]{24}")
MISSING = re.compile(r'link_stat "[^"]*/([0-9A-F]{24})" failed: No such file')


def _options(settings: Settings) -> list[str]:
    config = settings.drill_barman_config
    return [] if config is None else ["-c", str(config)]


async def _barman(settings: Settings, *args: str, run_as: str | None,
                  timeout: float = 600) -> tools.Result:
    return await tools.run("barman", *_options(settings), *args, timeout=timeout,
                           env=tools.clean_env(), user=run_as)


def _said(done: tools.Result) -> str:
    """Barman's own words: its error lines, else the end of what it printed."""
    text = done.stderr + done.stdout
    errors = [line.strip() for line in text.splitlines() if line.startswith("ERROR")]
    return " ".join(" ".join(errors or text.split()).split())[-500:]


def owner(settings: Settings) -> str | None:
    """Barman's `barman_user` when we are root (Barman becomes it; the copy runs as it), else
    None: then Barman runs as us, or refuses saying which user it must run as."""
    if os.geteuid() != 0:
        return None
    configured = settings.drill_barman_config
    path = configured or next((Path(p).expanduser() for p in CONFIG_FILES
                               if Path(p).expanduser().exists()), None)
    parser = configparser.ConfigParser(interpolation=None)
    if path is not None:
        try:
            with open(path) as fh:
                parser.read_file(fh)
        except (OSError, configparser.Error) as error:
            raise NoBackup(f"cannot read Barman's configuration {path}: {error}") from None
    user = parser.get("barman", "barman_user", fallback="barman")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise NoBackup(f"Barman's barman_user {user!r} is not a user on this machine") from None
    if user == "root":
        raise NoBackup("Barman's barman_user is root: PostgreSQL cannot run the copy as root")
    return user


async def check(settings: Settings, run_as: str | None) -> None:
    """`barman check`: NoBackup naming each check Barman fails."""
    server = settings.drill_barman_server or ""
    done = await _barman(settings, "check", server, run_as=run_as)
    if done.returncode == 0:
        return
    failed = [" ".join(line.split()) for line in done.stdout.splitlines() if ": FAILED" in line]
    raise NoBackup(f"barman check {server} failed: " + ("; ".join(failed) or _said(done)))


async def backups(settings: Settings, run_as: str | None) -> list[Latest]:
    """The server's restorable backups, oldest first (`barman list-backups`), once `barman
    check` passes. Which WAL each needs Barman says at recover time (`fetch`)."""
    await check(settings, run_as)
    server = settings.drill_barman_server or ""
    done = await _barman(settings, "-f", "json", "list-backups", server, run_as=run_as)
    if done.returncode != 0:
        raise NoBackup(f"barman list-backups {server} failed: {_said(done)}")
    try:
        listed = json.loads(done.stdout or "{}").get(server, [])
    except ValueError:
        raise NoBackup(f"barman list-backups {server} did not answer in JSON: "
                       f"{done.stdout.strip()[:200]}") from None
    # End times are whole seconds: the next one, so a target never precedes a backup's end.
    found = sorted((Latest(b["backup_id"],
                           datetime.fromtimestamp(int(b["end_time_timestamp"]) + 1, UTC), 0,
                           int(b["size_bytes"]), "")
                    for b in listed if b["status"] in RESTORABLE),
                   key=lambda b: b.stopped_at)
    if not found:
        statuses = ", ".join(f"{b['backup_id']} {b['status']}" for b in listed) or "none"
        raise NoBackup(f"Barman has no completed backup of server {server!r} ({statuses})")
    return found


async def fetch(settings: Settings, root: Path, run_as: str | None, newest: Latest,
                target: datetime | None = None
                ) -> tuple[Backup, pgcluster.Cluster, Latest]:
    """`barman recover` of backup `newest` into `root`/data (recovery has not run yet), with
    the WAL to replay to the archive's end or, with `target`, to that moment; `newest` with
    its PostgreSQL version and the last WAL segment restored."""
    datadir = root / "data"
    # Barman reads a target's wall-clock time as local time: give it local time.
    moment = [] if target is None else [
        "--target-time", target.astimezone().isoformat(sep=" "), "--target-action", "promote"]
    done = await _barman(settings, "recover", *moment, settings.drill_barman_server or "",
                         newest.label, str(datadir), run_as=run_as, timeout=RESTORE_TIMEOUT_S)
    output = done.stdout + done.stderr
    if missing := MISSING.findall(output):
        raise NoBackup(f"backup {newest.label} cannot be restored: Barman's catalog lists WAL "
                       f"files its archive no longer holds: {', '.join(sorted(missing)[:5])}"
                       + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if done.returncode != 0:
        raise RestoreFailed(f"barman recover of {newest.label} failed: {_said(done)}")
    try:
        major = int((datadir / "PG_VERSION").read_text().split(".")[0])
    except (OSError, ValueError):
        raise RestoreFailed(f"barman recover of {newest.label} left no PG_VERSION in "
                            f"{datadir}") from None
    try:
        bindir = pgcluster.find_bindir(major)
    except pgcluster.ClusterError as error:
        raise RestoreFailed(f"backup {newest.label} is of PostgreSQL {major}: {error}") from None
    copy = pgcluster.Cluster(bindir, root, pgcluster.free_port(), run_as)
    restored = sorted(p.name for wal in ("pg_wal", "barman_wal")
                      if (datadir / wal).is_dir() for p in (datadir / wal).iterdir()
                      if SEGMENT.fullmatch(p.name))
    info = _backup_info(datadir)
    try:  # to the microsecond, where list-backups says whole seconds
        stopped_at = datetime.fromisoformat(info["end_time"])
    except (KeyError, ValueError):
        stopped_at = newest.stopped_at
    if stopped_at.tzinfo is None:
        stopped_at = newest.stopped_at
    # Barman restores a backup still waiting for its WAL, only warning: refused here.
    newest = physical.consistent(replace(
        newest, stopped_at=stopped_at, major=major, archive_stop=info.get("end_wal", ""),
        archive_max=restored[-1] if restored else ""))
    return Backup("barman", datadir, None, newest.stopped_at, None, newest.bytes), copy, newest


def _backup_info(datadir: Path) -> dict[str, str]:
    """The restored backup's backup.info (its end_wal, end_time…), which Barman copies into
    the data directory."""
    try:
        lines = (datadir / ".barman-recover.info").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


async def recover(copy: pgcluster.Cluster, dbname: str, known_user: str | None) -> str:
    """physical.recover: the copy replays what Barman restored."""
    return await physical.recover(copy, dbname, known_user)
