"""The state schema runner against a real database: once-only, checksummed, concurrent-safe."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from bot import locks, migrate
from bot.db import connect
from bot.migrate import MigrationError
from bot.resources import resource_dir
from bot.settings import Settings

STATE_TABLES = ("analyses", "proposals", "audit_log", "drills", "job_runs", "schema_migrations")


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped migrations/ that a test may change."""
    copy = tmp_path / "migrations"
    shutil.copytree(resource_dir("migrations"), copy)
    return copy


async def recorded(settings: Settings) -> list[dict]:
    async with connect(settings, "state") as conn:
        cur = await conn.execute(
            "SELECT version, filename, checksum FROM hotdata.schema_migrations ORDER BY version")
        return await cur.fetchall()


async def test_first_upgrade_applies_every_file_and_second_applies_nothing(
        settings: Settings) -> None:
    shipped = [m.path.name for m in migrate.available()]
    assert "0001_init.sql" in shipped
    async with connect(settings, "state") as conn:
        assert await migrate.version(conn) is None
        assert await migrate.upgrade(conn) == shipped
        assert await migrate.upgrade(conn) == []
        assert await migrate.version(conn) == migrate.available()[-1].version


async def test_upgrade_creates_the_state_tables(settings: Settings) -> None:
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
        for table in STATE_TABLES:
            cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present",
                                     (f"hotdata.{table}",))
            row = await cur.fetchone()
            assert row is not None and row["present"], f"hotdata.{table} is missing"


async def test_upgrade_records_each_file_with_its_checksum(settings: Settings) -> None:
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
    expected = [
        {"version": path.name[:4], "filename": path.name,
         "checksum": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in sorted(resource_dir("migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))
    ]
    assert await recorded(settings) == expected


async def test_concurrent_upgrades_apply_each_file_exactly_once(settings: Settings) -> None:
    async with connect(settings, "state") as first, connect(settings, "state") as second:
        results = await asyncio.gather(migrate.upgrade(first), migrate.upgrade(second))
    shipped = [m.path.name for m in migrate.available()]
    assert sorted(results, key=len) == [[], shipped]
    rows = await recorded(settings)
    assert [row["filename"] for row in rows] == shipped


async def test_upgrade_waits_for_an_upgrade_already_holding_the_lock(settings: Settings) -> None:
    async with connect(settings, "state") as holder, connect(settings, "state") as waiter:
        await holder.execute("SELECT pg_advisory_lock(%s, %s)", locks.MIGRATE)
        pending = asyncio.create_task(migrate.upgrade(waiter))
        await asyncio.sleep(0.5)
        assert not pending.done()
        await holder.execute("SELECT pg_advisory_unlock(%s, %s)", locks.MIGRATE)
        assert await asyncio.wait_for(pending, 30) == [m.path.name for m in migrate.available()]


async def test_new_migration_file_is_applied_on_the_next_upgrade(
        settings: Settings, migrations_copy: Path) -> None:
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn, migrations_copy)
        (migrations_copy / "9001_notes.sql").write_text(
            "CREATE TABLE hotdata.notes (id bigserial PRIMARY KEY, body text);\n")
        assert await migrate.upgrade(conn, migrations_copy) == ["9001_notes.sql"]
        assert await migrate.version(conn) == "9001"
        await conn.execute("INSERT INTO hotdata.notes (body) VALUES ('hello')")


async def test_changed_applied_file_is_refused_by_name(
        settings: Settings, migrations_copy: Path) -> None:
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn, migrations_copy)
        edited = migrations_copy / "0001_init.sql"
        edited.write_text(edited.read_text() + "\nCREATE TABLE hotdata.sneaky (id int);\n")
        with pytest.raises(MigrationError, match=r"0001_init\.sql changed after it was applied"):
            await migrate.upgrade(conn, migrations_copy)
        cur = await conn.execute("SELECT to_regclass('hotdata.sneaky') IS NULL AS absent")
        row = await cur.fetchone()
        assert row is not None and row["absent"]


async def test_schema_newer_than_the_code_is_refused(settings: Settings) -> None:
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
        await conn.execute(
            "INSERT INTO hotdata.schema_migrations (version, filename, checksum) "
            "VALUES ('9999', '9999_future.sql', 'abc')")
        with pytest.raises(MigrationError, match=r"9999.*does not ship"):
            await migrate.upgrade(conn)


def test_verify_refuses_a_version_the_code_does_not_ship() -> None:
    shipped = migrate.available()
    done = {m.version: m.checksum for m in shipped} | {"9999": "0" * 64}
    with pytest.raises(MigrationError, match="9999"):
        migrate.verify(done, shipped)


def test_verify_accepts_what_the_code_ships() -> None:
    shipped = migrate.available()
    migrate.verify({m.version: m.checksum for m in shipped}, shipped)
    migrate.verify({}, shipped)


async def test_failing_migration_leaves_nothing_behind_and_releases_the_lock(
        settings: Settings, migrations_copy: Path) -> None:
    (migrations_copy / "9002_broken.sql").write_text(
        "CREATE TABLE hotdata.half_done (id int);\nSELECT 1 / 0;\n")
    async with connect(settings, "state") as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await migrate.upgrade(conn, migrations_copy)
        cur = await conn.execute("SELECT to_regclass('hotdata.half_done') IS NULL AS absent")
        row = await cur.fetchone()
        assert row is not None and row["absent"]
        assert await migrate.version(conn) == max(m.version for m in migrate.available())
    async with connect(settings, "state") as other:
        cur = await other.execute("SELECT pg_try_advisory_lock(%s, %s) AS got", locks.MIGRATE)
        row = await cur.fetchone()
        assert row is not None and row["got"]


# --- the audit log is append-only ---------------------------------------------------------


@pytest.fixture
async def audit_conn(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection[dict]]:
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
        await conn.execute(
            "INSERT INTO hotdata.audit_log (actor, action, outcome) "
            "VALUES ('U0MANAGER', 'approve', 'applied')")
        yield conn


async def audit_rows(conn: psycopg.AsyncConnection[dict]) -> list[dict]:
    cur = await conn.execute("SELECT actor, action, outcome FROM hotdata.audit_log ORDER BY id")
    return await cur.fetchall()


async def test_audit_log_accepts_inserts(audit_conn: psycopg.AsyncConnection[dict]) -> None:
    await audit_conn.execute(
        "INSERT INTO hotdata.audit_log (actor, action) VALUES ('U0ENGINEER', 'denied')")
    rows = await audit_rows(audit_conn)
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("U0MANAGER", "approve"), ("U0ENGINEER", "denied")]


@pytest.mark.parametrize("statement", [
    "UPDATE hotdata.audit_log SET outcome = 'rewritten'",
    "DELETE FROM hotdata.audit_log",
    "TRUNCATE hotdata.audit_log",
])
async def test_audit_log_refuses_changes(
        audit_conn: psycopg.AsyncConnection[dict], statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        await audit_conn.execute(statement)
    assert await audit_rows(audit_conn) == [
        {"actor": "U0MANAGER", "action": "approve", "outcome": "applied"}]
