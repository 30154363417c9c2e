"""The state schema: ordered SQL files in `migrations/`, each applied once and checksummed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bot import locks
from bot.errors import UserError
from bot.resources import resource_dir

SCHEMA_MISSING = "SELECT to_regnamespace('hotdata') IS NULL AS missing"
BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS hotdata.schema_migrations (
    version    text PRIMARY KEY,
    filename   text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(UserError):
    """The state schema and the shipped migration files disagree; start-up must stop."""


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def available(directory: Path | None = None) -> list[Migration]:
    directory = directory or resource_dir("migrations")
    files = sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [Migration(path.name.split("_", 1)[0], path) for path in files]


async def applied(conn: psycopg.AsyncConnection[dict[str, Any]]) -> dict[str, str]:
    """version → checksum of what the state database has applied ({} before the first upgrade).

    `conn` must return dict rows, as every connection from `bot.db.connect` does.
    """
    cur = await conn.execute("SELECT to_regclass('hotdata.schema_migrations') IS NOT NULL AS ok")
    row = await cur.fetchone()
    if not row or not row["ok"]:
        return {}
    cur = await conn.execute("SELECT version, checksum FROM hotdata.schema_migrations")
    return {r["version"]: r["checksum"] for r in await cur.fetchall()}


def verify(done: dict[str, str], files: list[Migration]) -> None:
    """Refuse an applied file that changed, and a schema newer than this code."""
    by_version = {m.version: m for m in files}
    for version, checksum in sorted(done.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"the state schema has migration {version}, which this hotdata does not ship: "
                "it was upgraded by a newer version; deploy that version")
        if migration.checksum != checksum:
            raise MigrationError(
                f"migrations/{migration.path.name} changed after it was applied "
                f"(checksum {checksum[:12]} applied, {migration.checksum[:12]} now): restore "
                "the original file and put the change in a new migration")


async def upgrade(conn: psycopg.AsyncConnection[dict[str, Any]],
                  directory: Path | None = None) -> list[str]:
    """Apply pending migrations under an advisory lock; return the file names applied.

    `conn` must be in autocommit mode. Concurrent upgrades wait for each other, so every
    file is applied exactly once.
    """
    files = available(directory)
    await conn.execute("SELECT pg_advisory_lock(%s, %s)", locks.MIGRATE)
    try:
        cur = await conn.execute(SCHEMA_MISSING)
        row = await cur.fetchone()
        if row and row["missing"]:  # creating it needs CREATE on the database: only the first time
            await conn.execute("CREATE SCHEMA hotdata")
        await conn.execute(BOOTSTRAP)
        done = await applied(conn)
        verify(done, files)
        names = []
        for migration in files:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO hotdata.schema_migrations (version, filename, checksum) "
                    "VALUES (%s, %s, %s)",
                    (migration.version, migration.path.name, migration.checksum))
            names.append(migration.path.name)
        return names
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s, %s)", locks.MIGRATE)


async def version(conn: psycopg.AsyncConnection[dict[str, Any]]) -> str | None:
    """The newest applied migration version, or None before the first upgrade."""
    done = await applied(conn)
    return max(done) if done else None

