"""`directory`: the newest dump a team's backup job left in HOTDATA_DRILL_BACKUP_DIR — a
custom-format file (`*.dump`) or a directory-format dump (a folder with `toc.dat`), with the
roles in a `*globals*.sql` file beside it when there is one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bot.drills.model import Backup
from bot.drills.sources import NoBackup


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def newest(directory: Path) -> Backup:
    if not directory.is_dir():
        raise NoBackup(f"backup directory {directory} does not exist")
    dumps = [p for p in directory.iterdir()
             if (p.is_file() and p.suffix in {".dump", ".backup", ".pgdump"})
             or (p.is_dir() and (p / "toc.dat").exists())]
    if not dumps:
        raise NoBackup(f"no dump in {directory}: expected *.dump files (pg_dump -Fc) or "
                       "directory-format dumps (pg_dump -Fd)")
    latest = max(dumps, key=lambda p: p.stat().st_mtime)
    globals_files = sorted(directory.glob("*globals*.sql"), key=lambda p: p.stat().st_mtime)
    taken = datetime.fromtimestamp(latest.stat().st_mtime, UTC)
    return Backup("directory", latest, globals_files[-1] if globals_files else None, taken,
                  None, _size(latest))
