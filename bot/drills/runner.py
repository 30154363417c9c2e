"""A restore drill, phase by phase: fetch → roles → restore → verify, then always clean up.

hotdata never writes to the source (except its own heartbeat, elsewhere), restores only into
a database it creates and records, refuses a scratch server that is the source itself, checks
free disk first, and drops only databases it recorded — also after a crash, at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pglast
import psycopg
from pglast import ast
from psycopg import sql
from psycopg.types.json import Jsonb

from bot import locks, pgcluster, toc, tools
from bot.catalog import TAG
from bot.db import Role, connect
from bot.drills import facts as drill_facts
from bot.drills import pitr, store, verify
from bot.drills.model import Backup, Check, DrillResult, Facts, Phase
from bot.drills.sources import NoBackup, barman, directory, dump, pgbackrest, physical
from bot.dsn import parse_dsn, redact_dsn, with_options
from bot.errors import UserError
from bot.settings import Settings
from bot.tools import conninfo_and_env

log = logging.getLogger(__name__)

# The sources restored as a whole private cluster that replays the archived WAL.
PHYSICAL: dict[str, physical.Repository] = {"pgbackrest": pgbackrest, "barman": barman}

Progress = Callable[[str], Awaitable[None]]
RESTORE_TIMEOUT_S = 6 * 3600
# Readable by any role (data_directory is not: it needs pg_read_all_settings).
IDENTITY_SQL = TAG + "SELECT inet_server_port() AS port, pg_postmaster_start_time() AS started"
STALE_SQL = """
UPDATE hotdata.drills SET status = 'failed', finished_at = now(),
       result = jsonb_build_object('id', id, 'status', 'failed', 'source', source,
                                   'phases', '[]'::jsonb, 'checks', %s::jsonb)
WHERE status = 'running'
"""


class DrillRefused(UserError):
    """The drill must not run (one is running, no scratch server, the scratch is the source…)."""


async def _server(settings: Settings, role: Role, dsn: str) -> tuple[object, ...]:
    async with connect(settings, role, dsn=dsn) as conn:
        cur = await conn.execute(IDENTITY_SQL)
        row = await cur.fetchone()
    assert row is not None
    return row["port"], row["started"]


async def _record_scratch(settings: Settings, name: str, drill_id: int, server: str,
                          kind: str = "database") -> None:
    async with connect(settings, "state") as conn:
        await conn.execute("INSERT INTO hotdata.drill_databases (name, drill_id, server, kind) "
                           "VALUES (%s, %s, %s, %s)", (name, drill_id, server, kind))


async def drop_scratch(settings: Settings, scratch_dsn: str | None = None) -> list[str]:
    """Remove every scratch hotdata recorded and has not removed yet: databases on the scratch
    server, and restored clusters (stopped, their directory deleted) on this host. Their names.
    """
    scratch_dsn = scratch_dsn or settings.drill_database_url
    dropped = []
    async with connect(settings, "state") as state:
        cur = await state.execute("SELECT name, kind, server FROM hotdata.drill_databases "
                                  "WHERE dropped_at IS NULL ORDER BY created_at")
        rows = await cur.fetchall()
        databases = [r["name"] for r in rows if r["kind"] == "database"]
        if databases and scratch_dsn:
            async with connect(settings, "migrator", dsn=scratch_dsn) as server:
                for name in databases:
                    await server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                                         .format(sql.Identifier(name)))
                    dropped.append(name)
        # A cluster lives on the host that restored it. Callers hold the drill lock, so none
        # is in use: remove those here; one recorded elsewhere and not here is left to its
        # host (a host renamed by a restart still finds its directories).
        for row in rows:
            root = Path(row["name"])
            if row["kind"] == "cluster" and (root.exists() or root.is_symlink()
                                             or row["server"] == socket.gethostname()):
                await physical.remove(root)
                dropped.append(row["name"])
        for name in dropped:
            await state.execute("UPDATE hotdata.drill_databases SET dropped_at = now() "
                                "WHERE name = %s", (name,))
    return dropped


INTERRUPTED = [{"name": "drill", "ok": False,
                "detail": "interrupted: hotdata stopped before the drill finished"}]


async def clean_leftovers(settings: Settings) -> list[str]:
    """At start-up: what a crashed drill left is removed (its scratch database or cluster, its
    private working directory with the backup it fetched) and the drill is closed as failed
    (interrupted); unless a drill is running right now (on another replica: nothing of it is
    a leftover, and it cleans up after itself)."""
    async with connect(settings, "state") as state:
        cur = await state.execute("SELECT pg_try_advisory_lock(%s, %s) AS ok", locks.DRILL)
        row = await cur.fetchone()
        if not row or not row["ok"]:
            return []
        try:
            await state.execute(STALE_SQL, (Jsonb(INTERRUPTED),))
            cur = await state.execute("SELECT token FROM hotdata.installation")
            installation = await cur.fetchone()
            removed = await drop_scratch(settings)
            if installation is not None:
                for work in Path(tempfile.gettempdir()).glob(
                        workdir_name(installation["token"], "*")):
                    shutil.rmtree(work, ignore_errors=True)
                    removed.append(str(work))
            return removed
        finally:
            await state.execute("SELECT pg_advisory_unlock(%s, %s)", locks.DRILL)


def scratch_name(token: str, drill_id: int) -> str:
    """The scratch database or restore directory of a drill: this installation's token keeps
    it apart from another installation's drill with the same id."""
    return f"hotdata_drill_{token}_{drill_id}"


def workdir_name(token: str, drill_id: int | str) -> str:
    """The private working directory (in the temporary directory) where a drill fetches its
    backup: known by name, so the next start removes it if the drill's process died."""
    return f"hotdata-drill-work-{token}-{drill_id}"


def _dbname(dsn: str, name: str) -> str:
    return with_options(dsn, dbname=name)


def backup_roles(globals_sql: str) -> list[str]:
    """The roles a `pg_dumpall --roles-only` file creates (its psql meta-commands skipped)."""
    text = "\n".join(line for line in globals_sql.splitlines()
                     if not line.lstrip().startswith("\\"))
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as error:
        raise verify.RolesFailed(f"the backup's roles file does not parse: {error}") from None
    return [s.stmt.role for s in statements
            if isinstance(s.stmt, ast.CreateRoleStmt) and s.stmt.role]


async def _roles(settings: Settings, backup: Backup, scratch_dsn: str, result: DrillResult,
                 *, superuser: bool) -> None:
    """The roles the backup names that the scratch server lacks, created as NOLOGIN roles
    without attributes; a role that exists there is never altered (the roles file's ALTER
    ROLE and GRANT lines are not replayed: they would change the scratch server's own roles,
    its bootstrap superuser included). A role that cannot be created fails the drill. A
    scratch role that is not a superuser becomes a member of the roles it created, so the RLS
    probes may act as them (PostgreSQL 16 makes their creator their admin anyway)."""
    if backup.globals_sql is None:
        return
    names = backup_roles(backup.globals_sql.read_text())
    created = []
    async with connect(settings, "scratch", dsn=scratch_dsn) as server:
        cur = await server.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                   (names,))
        present = {row["rolname"] for row in await cur.fetchall()}
        for role in (n for n in names if n not in present and not n.startswith("pg_")):
            try:
                await server.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
                if not superuser:
                    await server.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(
                        sql.Identifier(role)))
            except psycopg.errors.DuplicateObject:  # created meanwhile: it exists
                continue
            except psycopg.Error as error:
                raise verify.RolesFailed(
                    f"role {role} could not be created on the scratch server: "
                    f"{error.diag.message_primary or error}") from None
            created.append(role)
    shown = ", ".join(created[:20]) + (f" and {len(created) - 20} more" if len(created) > 20
                                        else "")
    result.checks.append(Check("roles", True, (
        f"created on the scratch server as NOLOGIN roles without attributes: {shown}; "
        "existing roles left as they were") if created else (
        f"all {len(names)} roles of the backup exist on the scratch server; none was altered")))


SCRATCH_ROLE_SQL = TAG + """
SELECT current_user AS me, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS super,
       ARRAY(SELECT DISTINCT name FROM pg_available_extension_versions
             WHERE superuser AND NOT trusted) AS privileged
"""


def restore_list(listing: str, *, superuser: bool,
                 privileged: set[str]) -> tuple[str, list[str]]:
    """What of the backup's table of contents the drill restores, and what it leaves out.

    Event triggers never: their function would run on every DDL command in the copy, and only
    a superuser may own one. A scratch role that is not a superuser restores without owners
    (the caller passes --no-owner) and without default privileges (ALTER DEFAULT PRIVILEGES
    FOR ROLE needs that role's membership; they only concern future objects); an extension
    only a superuser may create fails the drill here, before anything is restored."""
    def left_out(entry: str) -> bool:
        return entry.startswith(("EVENT TRIGGER ", "COMMENT - EVENT TRIGGER ")) or (
            not superuser and entry.startswith("DEFAULT ACL "))
    kept, dropped = toc.without(listing, left_out)
    if not superuser:
        entries = [m.group(1).split() for line in kept.splitlines()
                   if (m := toc.ENTRY.match(line))]
        needed = sorted({e[2] for e in entries
                         if e[:2] == ["EXTENSION", "-"] and e[2] in privileged})
        if needed:
            raise verify.RestoreFailed(
                f"the backup has extensions only a superuser can create: {', '.join(needed)}; "
                "the scratch role is not a superuser: give the drill a superuser on the scratch "
                "server (README: choosing the scratch role)")
    return kept, dropped


def _left_out(dropped: list[str]) -> str:
    names = sorted({f"event trigger {entry.split()[3]}" if entry.startswith("EVENT TRIGGER")
                    else "default privileges" for entry in dropped
                    if not entry.startswith("COMMENT")})
    return ", ".join(names)


async def _restore(settings: Settings, backup: Backup, scratch_dsn: str, name: str,
                   work: Path, result: DrillResult) -> str | None:
    """Roles, then pg_restore into database `name` (a pg_restore as new as the scratch server
    and the pg_dump that wrote the backup); the scratch role when it had to stand in for the
    source's owners (a restore without owners), else None."""
    conninfo, env = conninfo_and_env(scratch_dsn, dbname=name)
    started = time.perf_counter()
    async with connect(settings, "scratch", dsn=scratch_dsn) as server:
        cur = await server.execute(SCRATCH_ROLE_SQL)
        role = await cur.fetchone()
        pg_restore = toc.restorer(backup.path, server.info.server_version // 10000)
    assert role is not None
    try:
        kept, dropped = restore_list(await toc.listing(str(backup.path), pg_restore),
                                     superuser=bool(role["super"]),
                                     privileged=set(role["privileged"]))
    except ValueError as error:
        raise verify.RestoreFailed(str(error)) from None
    await _roles(settings, backup, scratch_dsn, result, superuser=bool(role["super"]))
    result.phases.append(Phase("roles", round(time.perf_counter() - started, 3)))
    listing = work / "restore.list"
    listing.write_text(kept)
    owners = [] if role["super"] else ["--no-owner"]
    started = time.perf_counter()
    restored = await tools.run(pg_restore, f"--jobs={settings.drill_jobs}", "--exit-on-error",
                               *owners, "--use-list", str(listing), "--dbname", conninfo,
                               str(backup.path), timeout=RESTORE_TIMEOUT_S, env=env)
    result.phases.append(Phase("restore", round(time.perf_counter() - started, 3)))
    if restored.returncode != 0:
        raise verify.RestoreFailed(restored.stderr.strip()[-600:] or "pg_restore failed")
    detail = "pg_restore finished without errors"
    if owners:
        detail += (f"; restored without owners (the scratch role {role['me']} is not a "
                   "superuser): it owns every object, standing in for the source's owners")
    if dropped:
        detail += f"; not restored: {_left_out(dropped)}"
    result.checks.append(Check("restore", True, detail))
    return None if role["super"] else str(role["me"])


async def run(settings: Settings, *, scratch_dsn: str | None = None,
              requested_by: str = "hotdata", progress: Progress | None = None) -> DrillResult:
    """Run one drill end to end and record it; raises DrillRefused before touching anything."""
    scratch_dsn = scratch_dsn or settings.drill_database_url
    if settings.drill_target != "latest" and settings.drill_source not in PHYSICAL:
        raise DrillRefused(f"HOTDATA_DRILL_TARGET={settings.drill_target} needs the pgbackrest "
                           "source or the barman source: a dump restores only the moment it "
                           "was taken")
    if settings.drill_source == "pgbackrest":
        if not settings.drill_pgbackrest_stanza:
            raise DrillRefused("HOTDATA_DRILL_PGBACKREST_STANZA is not set: name the pgBackRest "
                               "stanza whose backups the drill restores")
    elif settings.drill_source == "barman":
        if not settings.drill_barman_server:
            raise DrillRefused("HOTDATA_DRILL_BARMAN_SERVER is not set: name the Barman server "
                               "whose backups the drill restores")
    elif not scratch_dsn:
        raise DrillRefused("HOTDATA_DRILL_DATABASE_URL is not set: the drill needs a scratch "
                           "server where it may create a database")
    elif await _server(settings, "analysis", settings.database_url) == await _server(
            settings, "migrator", scratch_dsn):
        raise DrillRefused("the scratch server is the source server itself: hotdata restores "
                           "only onto a different server")
    if settings.drill_target != "latest" and await _server(
            settings, "state", settings.state_dsn) != await _server(
            settings, "analysis", settings.database_url):
        raise DrillRefused("a point-in-time drill proves where it stopped with hotdata's "
                           "heartbeat, which must then be on the source: keep the state "
                           "schema there (unset HOTDATA_STATE_DATABASE_URL)")
    result = DrillResult(source=settings.drill_source)
    async with connect(settings, "state") as state:
        cur = await state.execute("SELECT pg_try_advisory_lock(%s, %s) AS ok", locks.DRILL)
        row = await cur.fetchone()
        if not row or not row["ok"]:
            raise DrillRefused("A restore drill is already running; its result will be "
                               "posted when it finishes.")
        try:
            await drop_scratch(settings, scratch_dsn)  # leftovers of a crashed drill
            # We hold the lock: a drill still 'running' is one whose process died.
            await state.execute(STALE_SQL, (Jsonb(INTERRUPTED),))
            if settings.drill_source == "dump":
                # The dump is taken now: its RPO is measured even when no `hotdata serve`
                # writes the heartbeat (in the state schema: the target's, by default).
                await store.heartbeat(state, unless_within="2 minutes")
            # The token comes with the state schema (migration 0005); recreated if deleted.
            await state.execute("INSERT INTO hotdata.installation DEFAULT VALUES "
                                "ON CONFLICT DO NOTHING")
            cur = await state.execute(
                "INSERT INTO hotdata.drills (source, requested_by) VALUES (%s, %s) "
                "RETURNING id, (SELECT token FROM hotdata.installation) AS token",
                (settings.drill_source, requested_by))
            drill = await cur.fetchone()
            assert drill is not None
            result.id = int(drill["id"])
            try:
                await _drill(settings, scratch_dsn, result, drill["token"], progress)
            except BaseException as error:  # cancelled, or an unexpected error: not 'running'
                result.status = "failed"
                reason = ("cancelled" if isinstance(error, asyncio.CancelledError)
                          else f"{type(error).__name__}: {error}")
                result.checks.append(Check("drill", False, f"interrupted: {reason}"[:600]))
                try:
                    await _finish(state, result)
                except Exception:  # the next drill marks it failed
                    log.exception("could not record the end of drill %s", result.id)
                raise
            await _finish(state, result)
        finally:
            await state.execute("SELECT pg_advisory_unlock(%s, %s)", locks.DRILL)
    return result


async def _finish(state: psycopg.AsyncConnection[dict[str, Any]], result: DrillResult) -> None:
    await state.execute(
        "UPDATE hotdata.drills SET status = %s, finished_at = now(), rto_seconds = %s, "
        "rpo_seconds = %s, scratch_database = %s, result = %s WHERE id = %s",
        (result.status, result.rto_seconds, result.rpo_seconds, result.scratch_database,
         Jsonb(result.as_dict()), result.id))


async def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        await progress(text)


async def _drill(settings: Settings, scratch_dsn: str | None, result: DrillResult, token: str,
                 progress: Progress | None) -> None:
    started = time.perf_counter()
    assert result.id is not None
    name = scratch_name(token, result.id)
    copy = (_cluster_copy(settings, result, name, progress)
            if settings.drill_source in PHYSICAL
            else _database_copy(settings, scratch_dsn or "", result, name,
                                Path(tempfile.gettempdir()) / workdir_name(token, result.id),
                                progress))
    try:
        async with copy as (backup, copy_dsn, stand_in):
            await _say(progress, "verifying tables, indexes and Row Level Security…")
            await _verify(settings, backup, copy_dsn, stand_in, result, started)
    except (verify.RestoreFailed, verify.RolesFailed, dump.DumpFailed, NoBackup,
            physical.RecoveryFailed, pgcluster.ClusterError,
            tools.ToolMissing, psycopg.Error) as error:
        result.checks.append(verify.failure(error))
        result.status = "failed"


@asynccontextmanager
async def _database_copy(settings: Settings, scratch_dsn: str, result: DrillResult, name: str,
                         work: Path, progress: Progress | None
                         ) -> AsyncIterator[tuple[Backup, str, str | None]]:
    """dump / directory: the backup fetched into `work` (private to hotdata's user, removed
    after), restored into a new database `name` on the scratch server."""
    result.scratch_database = name
    started = time.perf_counter()
    shutil.rmtree(work, ignore_errors=True)  # a dead drill's, with the same id: never reused
    work.mkdir(mode=0o700)
    try:
        try:
            await _say(progress, "fetching the backup…")
            backup = await _fetch(settings, work)
            result.phases.append(Phase("fetch", round(time.perf_counter() - started, 3)))
            result.bytes_restored = backup.bytes
            _check_disk(backup.bytes * 2, Path(tempfile.gettempdir()))
            async with connect(settings, "migrator", dsn=scratch_dsn) as server:
                await server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            await _record_scratch(settings, name, result.id or 0, redact_dsn(scratch_dsn))
            await _say(progress, "restoring roles and data…")
            stand_in = await _restore(settings, backup, scratch_dsn, name, work, result)
            yield backup, _dbname(scratch_dsn, name), stand_in
        finally:
            await _cleanup(settings, progress, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@asynccontextmanager
async def _cluster_copy(settings: Settings, result: DrillResult, name: str,
                        progress: Progress | None
                        ) -> AsyncIterator[tuple[Backup, str, str | None]]:
    """pgbackrest, barman: the backup restored as a whole private cluster that replays the
    archive, in the directory `name` of the restore directory."""
    repository = PHYSICAL[settings.drill_source]
    parent = settings.drill_restore_dir or Path(tempfile.gettempdir())
    root = parent / name
    result.scratch_database = str(root)
    started = time.perf_counter()
    # Made before it is recorded, and only if nothing (not even a link) is there: hotdata
    # never adopts, and so never deletes, a directory it did not make.
    run_as = repository.owner(settings)
    physical.prepare(root, run_as)
    await _record_scratch(settings, str(root), result.id or 0, socket.gethostname(), "cluster")
    try:
        found = await repository.backups(settings, run_as)
        target = None
        if settings.drill_target != "latest":
            await _say(progress, "waiting for the archive to hold a moment after the target…")
            target = await pitr.target(settings, found[0].stopped_at)
            result.recovery_target = target
        newest = physical.choose(found, target)
        await _say(progress, "fetching the backup…")
        _check_disk(newest.bytes, parent)
        backup, copy, newest = await repository.fetch(settings, root, run_as, newest, target)
        result.phases.append(Phase("fetch", round(time.perf_counter() - started, 3)))
        result.bytes_restored = backup.bytes
        await _say(progress, "replaying the archived WAL…")
        restore_started = time.perf_counter()
        source = parse_dsn(settings.database_url)
        dbname = source.get("dbname") or "postgres"
        user = await repository.recover(copy, dbname, source.get("user"))
        result.phases.append(Phase("restore", round(time.perf_counter() - restore_started, 3)))
        copy_dsn = copy.socket_dsn(dbname, user)
        result.checks.append(await pitr.check(settings, copy_dsn, newest, target))
        yield backup, copy_dsn, None
    finally:
        await _cleanup(settings, progress, str(root))


async def _cleanup(settings: Settings, progress: Progress | None, name: str) -> None:
    await _say(progress, "cleaning up…")
    try:
        await drop_scratch(settings)
    except Exception:  # cleanup is retried at the next drill and at start-up
        log.exception("could not remove the drill's scratch %s", name)


async def _verify(settings: Settings, backup: Backup, copy_dsn: str, stand_in: str | None,
                  result: DrillResult,
                  started: float) -> None:
    verify_started = time.perf_counter()
    async with connect(settings, "migrator", dsn=copy_dsn) as copy:
        restored = await drill_facts.read(
            copy, fingerprint_max_bytes=int(settings.drill_fingerprint_max_mb * 2**20),
            app_role=settings.app_role, claims=settings.app_jwt_claims)
        result.checks += await verify.indexes(copy)
    # A team's own backup carries no counts of its snapshot: compare with the live source
    source_facts = backup.facts if backup.facts is not None else await _live_facts(settings)
    result.checks += verify.compare(source_facts, restored, result,
                                    snapshot=backup.facts is not None, stand_in=stand_in)
    result.phases.append(Phase("verify", round(time.perf_counter() - verify_started, 3)))
    result.rto_seconds = round(time.perf_counter() - started, 3)
    now = datetime.now(UTC)
    if backup.taken_at is not None:
        result.backup_age_seconds = round((now - backup.taken_at).total_seconds(), 3)
    if restored.heartbeat is not None:  # a point-in-time copy: how far before its target
        result.rpo_seconds = round(((result.recovery_target or now)
                                    - restored.heartbeat).total_seconds(), 3)
    result.checks += verify.targets(settings, result)
    result.status = "passed" if all(c.ok for c in result.checks) else "failed"


async def _live_facts(settings: Settings) -> Facts:
    """The source's facts now, from one read-only snapshot (no fingerprints: data moves)."""
    async with connect(settings, "analysis") as conn, conn.transaction():
        await conn.execute(TAG + "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await conn.execute(TAG + "SET LOCAL statement_timeout = 0")
        return await drill_facts.read(conn, fingerprint_max_bytes=-1, app_role=settings.app_role,
                                      claims=settings.app_jwt_claims)


async def _fetch(settings: Settings, work: Path) -> Backup:
    if settings.drill_source == "directory":
        if settings.drill_backup_dir is None:
            raise NoBackup("HOTDATA_DRILL_BACKUP_DIR is not set")
        return directory.newest(settings.drill_backup_dir)
    return await dump.take(settings, work)


def _check_disk(needed: int, where: Path) -> None:
    """Refuse a restore the disk obviously cannot hold (checkable only on this machine; a
    remote scratch server's own errors say it otherwise)."""
    free = shutil.disk_usage(where).free
    if needed > free:
        raise verify.RestoreFailed(f"not enough free disk: the restore needs about "
                                   f"{needed:,} bytes and only {free:,} are free")
