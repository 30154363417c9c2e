"""A schema review's sandbox: a throwaway database and a throwaway role of the same name on the
scratch server, holding a copy of the target's schema that the role owns.

The plan, and the copy it runs on, only ever see connections that logged in as the throwaway
role. `SET ROLE` would not do: any function a plan creates can `RESET ROLE` and be back to the
session's own user. The role is no superuser, holds no predefined role (server files,
programs), is a member of nothing, owns only what is in its database, has its own timeouts and
expires on its own. Its password is random, sent to the server already hashed, and never kept.

As the scratch server's privileged role: record the sandbox (state) → create the role and the
database it owns → create the roles the copied schema names that the server lacks (NOLOGIN, no
attributes; existing roles are never altered) → create the target's extensions, never an
unsafe one. Then, as the throwaway role: restore `pg_dump --schema-only` of the target (without
its extensions, event triggers, publications and owners) and replay the default privileges of
the target's table owners. Always: drop the database and the role, also at the next start
after a crash (the running review holds an advisory lock, so only a dead one's is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bot import locks, pgcluster, toc, tools
from bot.catalog import TAG
from bot.db import DatabaseUnavailable, connect
from bot.dsn import redact_dsn, scrub, with_options
from bot.errors import UserError
from bot.settings import UNSAFE_EXTENSIONS, Settings
from bot.tools import conninfo_and_env

log = logging.getLogger(__name__)

PREFIX = "hotdata_review_"
# The throwaway role's own limits, set on the role so they hold from its first statement.
ROLE_SETTINGS = {"statement_timeout": "5s", "lock_timeout": "2s",
                 "idle_in_transaction_session_timeout": "60s"}
ROLE_LIFETIME = timedelta(hours=2)  # the login expires even if nothing drops the role
DUMP_TIMEOUT_S = 300
LOGIN_HINT = (f". hotdata logs in to the review database as a throwaway role ({PREFIX}…) with "
              "a password: allow password logins (scram-sha-256) in the scratch server's "
              "pg_hba.conf")
# pg_restore's table of contents: what the throwaway role may not create, or hotdata made.
SKIPPED_ENTRIES = ("EXTENSION ", "EVENT TRIGGER ", "DEFAULT ACL ", "COMMENT - EXTENSION ",
                   "COMMENT - EVENT TRIGGER ")
DEFAULT_ACL_KINDS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES",
                     "n": "SCHEMAS"}
PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER",
              "EXECUTE", "USAGE", "CREATE", "MAINTAIN"}

EXTENSIONS_SQL = TAG + """
SELECT e.extname AS name, n.nspname AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname <> 'plpgsql'
ORDER BY e.oid
"""
# Every role an object of this database depends on (owner, grantee, policy), and the bootstrap
# superuser, which the catalog does not track: the roles the copied schema may name.
ROLES_SQL = TAG + """
SELECT r.rolname AS name FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
WHERE d.refclassid = 'pg_authid'::regclass
  AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
UNION SELECT rolname FROM pg_roles WHERE oid = 10
ORDER BY 1
"""
# Default privileges of the roles that own the application's tables: a table a plan creates
# gets the grants it would get from them (Supabase grants new tables to anon, authenticated).
DEFAULT_ACL_SQL = TAG + """
SELECT n.nspname AS schema, d.defaclobjtype::text AS kind,
       coalesce(g.rolname, 'PUBLIC') AS grantee, a.privilege_type AS privilege
FROM pg_default_acl d
LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
CROSS JOIN LATERAL aclexplode(d.defaclacl) AS a
LEFT JOIN pg_roles g ON g.oid = a.grantee
WHERE a.grantee <> d.defaclrole
  AND d.defaclrole IN (SELECT c.relowner FROM pg_class c
                       JOIN pg_namespace s ON s.oid = c.relnamespace
                       WHERE c.relkind IN ('r', 'p') AND s.nspname NOT LIKE 'pg\\_%'
                         AND s.nspname <> 'information_schema')
ORDER BY 1, 2, 3, 4
"""
LEFTOVERS_SQL = ("SELECT id, name FROM hotdata.review_databases WHERE dropped_at IS NULL "
                 "ORDER BY id")


class SandboxError(UserError):
    """The sandbox could not be prepared; the message is safe to show."""


@dataclass(frozen=True)
class DefaultGrant:
    schema: str | None
    kind: str
    grantee: str
    privilege: str


@dataclass
class TargetFacts:
    """What the copy of the target's schema needs on the scratch server."""
    extensions: list[tuple[str, str]]  # (name, schema), in creation order
    roles: list[str]
    default_grants: list[DefaultGrant]
    major: int  # the target's PostgreSQL major version: pg_dump must be at least as new

    @property
    def extension_names(self) -> set[str]:
        return {name for name, _ in self.extensions}


@dataclass
class Sandbox:
    name: str  # the database and the role
    dsn: str  # the throwaway role's login to its database
    notes: list[str] = field(default_factory=list)


async def target_facts(conn: psycopg.AsyncConnection[dict[str, Any]]) -> TargetFacts:
    """Read (on the target, read-only) the extensions, roles and default privileges."""
    extensions = [(r["name"], r["schema"]) for r in await (await conn.execute(EXTENSIONS_SQL))
                  .fetchall()]
    roles = [r["name"] for r in await (await conn.execute(ROLES_SQL)).fetchall()
             if not r["name"].startswith("pg_")]
    grants = [DefaultGrant(**r) for r in await (await conn.execute(DEFAULT_ACL_SQL)).fetchall()]
    return TargetFacts(extensions, roles, grants, conn.info.server_version // 10000)


def toc_kept(listing: str, schemas: set[str]) -> str:
    """`pg_restore -l` without the entries the throwaway role may not or need not restore:
    extensions and the schemas hotdata created for them, event triggers, default privileges."""
    kept, _ = toc.without(listing, lambda entry: entry.startswith(SKIPPED_ENTRIES) or any(
        entry.startswith(f"SCHEMA - {s} ") for s in schemas))
    return kept


def _errors(stderr: str) -> list[str]:
    return [" ".join(line.split()) for line in stderr.splitlines() if "ERROR:" in line]


async def _create(admin: psycopg.AsyncConnection[dict[str, Any]], name: str, password: str,
                  facts: TargetFacts, notes: list[str]) -> None:
    role = sql.Identifier(name)
    hashed = admin.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
    expires = (datetime.now(UTC) + ROLE_LIFETIME).isoformat()
    await admin.execute(sql.SQL(
        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        "NOBYPASSRLS CONNECTION LIMIT 3 VALID UNTIL {} PASSWORD {}").format(
        role, sql.Literal(expires), sql.Literal(hashed.decode())))
    for setting, value in ROLE_SETTINGS.items():
        await admin.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
            role, sql.Identifier(setting), sql.Literal(value)))
    # The privileged role may hand the database to it (a non-superuser needs the membership).
    await admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
    await admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
    await admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(role))
    cur = await admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                              (facts.roles,))
    present = {r["rolname"] for r in await cur.fetchall()}
    created = []
    for missing in (r for r in facts.roles if r not in present):
        try:
            await admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(missing)))
            created.append(missing)
        except psycopg.errors.DuplicateObject:  # another review made it meanwhile
            pass
    if created:
        notes.append("created on the scratch server, as NOLOGIN roles without attributes, the "
                     f"roles the schema names: {', '.join(created)}")


async def _extensions(settings: Settings, server: str, name: str,
                      wanted: list[tuple[str, str | None]], notes: list[str]) -> set[str]:
    """Create the extensions as the privileged role, before the throwaway role logs in; the
    schemas made for them (owned by the throwaway role)."""
    schemas: set[str] = set()
    async with connect(settings, "scratch", dsn=with_options(server, dbname=name)) as admin:
        for extension, schema in wanted:
            if extension in UNSAFE_EXTENSIONS:
                continue
            try:
                if schema and schema not in ("public", "pg_catalog"):
                    await admin.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}")
                                        .format(sql.Identifier(schema), sql.Identifier(name)))
                    schemas.add(schema)
                statement = sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(
                    sql.Identifier(extension))
                if schema:
                    statement += sql.SQL(" WITH SCHEMA {}").format(sql.Identifier(schema))
                await admin.execute(statement)
            except psycopg.Error as error:
                notes.append(f"extension {extension} is not available on the scratch server: "
                             f"{(error.diag.message_primary or str(error))[:200]}")
    return schemas


async def _copy_schema(target: str, login: str, schemas: set[str], notes: list[str], *,
                       target_major: int, scratch_major: int) -> None:
    """pg_dump --schema-only of the target, restored by the throwaway role; each tool as new as
    the server it talks to (pg_restore: and as the pg_dump that wrote the archive)."""
    with tempfile.TemporaryDirectory(prefix="hotdata-review-") as tmp:
        archive, listing = Path(tmp) / "schema.dump", Path(tmp) / "schema.list"
        conninfo, env = conninfo_and_env(target)
        dumped = await tools.run(pgcluster.client_tool("pg_dump", target_major), "--schema-only",
                                 "--format=custom", "--file", str(archive), "--dbname", conninfo,
                                 timeout=DUMP_TIMEOUT_S, env=env)
        if dumped.returncode != 0:
            raise SandboxError(f"pg_dump --schema-only failed: {dumped.stderr.strip()[-300:]}")
        pg_restore = toc.restorer(archive, scratch_major)
        try:
            listed = await toc.listing(str(archive), pg_restore, timeout=60)
        except ValueError as error:
            raise SandboxError(str(error)) from None
        listing.write_text(toc_kept(listed, schemas))
        conninfo, env = conninfo_and_env(login)
        restored = await tools.run(
            pg_restore, "--schema-only", "--no-owner", "--no-publications",
            "--no-subscriptions", "--no-security-labels", "--no-tablespaces",
            "--use-list", str(listing), "--dbname", conninfo, str(archive),
            timeout=DUMP_TIMEOUT_S, env=env)
    errors = _errors(restored.stderr)
    if restored.returncode != 0 and not errors:  # it never got to run a statement
        detail = " ".join(restored.stderr.split())[-300:]
        raise SandboxError(f"pg_restore could not restore the schema copy: {detail}"
                           + (LOGIN_HINT if "password" in detail else ""))
    if errors:
        notes.append(f"{len(errors)} statement(s) of the schema copy failed on the scratch "
                     f"server, first: {errors[0][:200]}")


async def _default_grants(settings: Settings, login: str, grants: list[DefaultGrant]) -> None:
    async with connect(settings, "review", dsn=login) as conn:
        for grant in grants:
            kind = DEFAULT_ACL_KINDS.get(grant.kind)
            if kind is None or grant.privilege not in PRIVILEGES:
                continue
            statement: sql.Composable = sql.SQL("ALTER DEFAULT PRIVILEGES ")
            if grant.schema is not None:
                statement += sql.SQL("IN SCHEMA {} ").format(sql.Identifier(grant.schema))
            grantee = (sql.SQL("PUBLIC") if grant.grantee == "PUBLIC"
                       else sql.Identifier(grant.grantee))
            statement += sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(grant.privilege), sql.SQL(kind), grantee)
            try:
                await conn.execute(statement)
            except psycopg.Error as error:  # a schema the copy lacks: that default is moot
                log.debug("default privilege not replayed: %s", error)


async def _drop(settings: Settings, server: str, name: str) -> None:
    async with connect(settings, "scratch", dsn=server) as admin:
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@asynccontextmanager
async def opened(settings: Settings, target: str, facts: TargetFacts,
                 extensions: list[tuple[str, str | None]],
                 requested_by: str | None = None) -> AsyncIterator[Sandbox]:
    """A sandbox holding the target's schema, with `extensions` created besides the target's;
    dropped on exit, whatever happened (or, if the scratch server is gone by then, at the next
    start)."""
    server = settings.scratch_server
    name = f"{PREFIX}{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(24)
    login = with_options(server, dbname=name, user=name, password=password)
    box = Sandbox(name, login)
    async with connect(settings, "state") as state:  # its session holds the lock throughout
        cur = await state.execute("INSERT INTO hotdata.review_databases (name, server, "
                                  "requested_by) VALUES (%s, %s, %s) RETURNING id",
                                  (name, redact_dsn(server), requested_by))
        row = await cur.fetchone()
        assert row is not None
        await state.execute("SELECT pg_advisory_lock(%s, %s)", locks.reviewing(row["id"]))
        try:
            await _prepare(settings, server, target, box, password, facts, extensions)
            yield box
        finally:
            try:
                await _drop(settings, server, name)
            except (DatabaseUnavailable, psycopg.Error) as error:
                log.warning("review sandbox %s not dropped (next start drops it): %s", name,
                            scrub(str(error), settings.secrets()))
            else:
                await state.execute("UPDATE hotdata.review_databases SET dropped_at = now() "
                                    "WHERE id = %s", (row["id"],))


async def _prepare(settings: Settings, server: str, target: str, box: Sandbox, password: str,
                   facts: TargetFacts, extensions: list[tuple[str, str | None]]) -> None:
    try:
        async with connect(settings, "scratch", dsn=server) as admin:
            await _create(admin, box.name, password, facts, box.notes)
            scratch_major = admin.info.server_version // 10000
        schemas = await _extensions(settings, server, box.name,
                                    [*facts.extensions, *extensions], box.notes)
        await _copy_schema(target, box.dsn, schemas, box.notes, target_major=facts.major,
                           scratch_major=scratch_major)
        await _default_grants(settings, box.dsn, facts.default_grants)
    except psycopg.Error as error:
        raise SandboxError("the scratch server refused to prepare the review: "
                           + scrub(error.diag.message_primary or str(error),
                                   [password, *settings.secrets()])[:300]) from None
    except DatabaseUnavailable as error:
        raise SandboxError(str(error) + (LOGIN_HINT if box.name in str(error) else "")) from None
    except tools.ToolMissing as error:  # no pg_dump or pg_restore new enough
        raise SandboxError(str(error)) from None


@dataclass
class Deadline:
    seconds: float
    expired: bool = False


@asynccontextmanager
async def deadline(settings: Settings, box: Sandbox, seconds: float) -> AsyncIterator[Deadline]:
    """Terminate the throwaway role's sessions if the body takes longer than `seconds`: the
    role's statement_timeout is only a first line, since a function can catch the cancel."""
    timer = Deadline(seconds)

    async def expire() -> None:
        await asyncio.sleep(seconds)
        timer.expired = True
        async with connect(settings, "scratch", dsn=settings.scratch_server) as admin:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE usename = %s", (box.name,))

    watchdog = asyncio.create_task(expire(), name=f"deadline-{box.name}")
    try:
        yield timer
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog


async def drop_leftovers(settings: Settings) -> list[str]:
    """Drop every recorded sandbox whose review is not running (its lock is free): what a
    crash left behind. Their names."""
    dropped = []
    async with connect(settings, "state") as state:
        for row in await (await state.execute(LEFTOVERS_SQL)).fetchall():
            key = locks.reviewing(row["id"])
            cur = await state.execute("SELECT pg_try_advisory_lock(%s, %s) AS free", key)
            free = await cur.fetchone()
            if not free or not free["free"]:
                continue
            try:
                await _drop(settings, settings.scratch_server, row["name"])
                await state.execute("UPDATE hotdata.review_databases SET dropped_at = now() "
                                    "WHERE id = %s", (row["id"],))
                dropped.append(row["name"])
            finally:
                await state.execute("SELECT pg_advisory_unlock(%s, %s)", key)
    return dropped

