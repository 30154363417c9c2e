"""Connections to the three databases hotdata talks to, each with the guard rails of its role.

- analysis: the target, read-only (`default_transaction_read_only`) with a statement timeout;
- migrator: the target, autocommit, used only for allow-listed index DDL;
- state: hotdata's own schema;
- scratch: the scratch server's privileged role (drill and review databases, never the target);
- review: a schema review's throwaway role, inside its own review database.

`Pools` keeps a pool per role for short, stateless work (the container holds one, the flows use
it); work that keeps session state (an advisory lock held while applying or reviewing) takes a
dedicated connection from `connect`, closed when it is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot.catalog import TAG
from bot.dsn import parse_dsn, redact_dsn, scrub
from bot.settings import Settings

Role = Literal["analysis", "migrator", "state", "scratch", "review"]

APPLICATION_NAME = "hotdata"
CONNECT_TIMEOUT_S = 5
POOL_WAIT_S = 2  # for a free pooled connection; then a dedicated one is opened instead
Conn = psycopg.AsyncConnection[dict[str, Any]]


class DatabaseUnavailable(Exception):
    """A database could not be reached; the message is safe to show (no password)."""


# Where a role's URL is configured, for the one line that says which to change.
VARIABLES = {"analysis": "HOTDATA_DATABASE_URL", "state": "HOTDATA_STATE_DATABASE_URL",
             "migrator": "HOTDATA_MIGRATOR_DATABASE_URL", "scratch": "HOTDATA_DRILL_DATABASE_URL",
             "review": "HOTDATA_DRILL_DATABASE_URL"}
POOLER_HINT = ("hotdata needs a session there (its guards, locks and settings last as long as "
               "the connection): use the direct connection (port 5432) or a session-mode pooler")


def guards(role: Role, settings: Settings) -> dict[str, str]:
    """The settings a role's sessions must have in effect, as pg_settings shows them: sent as
    startup options, and verified once connected (a pooler may drop or refuse them)."""
    if role == "analysis":
        return {"default_transaction_read_only": "on",
                "statement_timeout": str(settings.statement_timeout_ms)}
    if role == "state":
        return {"statement_timeout": "30000"}
    if role == "migrator":
        return {"lock_timeout": str(settings.lock_timeout_ms)}
    if role == "scratch":
        return {"statement_timeout": "0"}
    return {}


def _options(role: Role, settings: Settings) -> str:
    return " ".join(f"-c {name}={value}" for name, value in guards(role, settings).items())


def dsn_for(role: Role, settings: Settings) -> str:
    """The configured URL of a role (a review's throwaway role has none: pass its dsn)."""
    if role == "review":
        raise ValueError("a review connection needs the sandbox's own dsn")
    return {"analysis": settings.database_url, "migrator": settings.migrator_dsn,
            "state": settings.state_dsn, "scratch": settings.scratch_server}[role]


def _kwargs(role: Role, settings: Settings) -> dict[str, Any]:
    return {"autocommit": True, "row_factory": dict_row,
            "application_name": f"{APPLICATION_NAME}-{role}",
            "options": _options(role, settings)}


async def open_connection(settings: Settings, role: Role, *, dsn: str | None = None,
                          connect_timeout: int = CONNECT_TIMEOUT_S) -> Conn:
    """An autocommit connection for `role`, its guards verified; the caller closes it.

    Connection failures become DatabaseUnavailable with the redacted address and libpq's
    reason, scrubbed of every configured secret; so does a transaction-mode pooler (it refuses
    the startup options, or drops them), with the one line that says what to use instead.
    """
    target = dsn or dsn_for(role, settings)
    where = f"the {role} database {redact_dsn(target)} ({VARIABLES[role]})"
    try:
        conn: Conn = await psycopg.AsyncConnection.connect(
            target, connect_timeout=connect_timeout, **_kwargs(role, settings))
    except psycopg.OperationalError as error:
        reason = scrub(" ".join(str(error).split()), [*settings.secrets(), *_password(target)])
        if "unsupported startup parameter" in reason:
            raise DatabaseUnavailable(
                f"{where} is a transaction-mode pooler (it refused the startup parameters "
                f"hotdata sets, as Supabase's pooler on port 6543 does): {POOLER_HINT}") from None
        raise DatabaseUnavailable(f"cannot connect to {where}: {reason}") from None
    try:
        await verify_guards(conn, guards(role, settings), where)
    except BaseException:
        await conn.close()
        raise
    return conn


async def verify_guards(conn: Conn, wanted: dict[str, str], where: str) -> None:
    """DatabaseUnavailable unless the session has `wanted` in effect (a pooler that drops
    startup parameters would leave hotdata without its read-only guard and timeouts)."""
    if not wanted:
        return
    cur = await conn.execute(TAG + "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                             (list(wanted),))
    found = {row["name"]: row["setting"] for row in await cur.fetchall()}
    missing = sorted(name for name, value in wanted.items() if found.get(name) != value)
    if missing:
        raise DatabaseUnavailable(
            f"{where} did not apply the settings hotdata asked for at connection "
            f"({', '.join(missing)}): a pooler that drops startup parameters? {POOLER_HINT}")


@asynccontextmanager
async def connect(settings: Settings, role: Role, *, dsn: str | None = None,
                  connect_timeout: int = CONNECT_TIMEOUT_S) -> AsyncIterator[Conn]:
    """`open_connection`, closed on exit."""
    conn = await open_connection(settings, role, dsn=dsn, connect_timeout=connect_timeout)
    try:
        yield conn
    finally:
        await conn.close()


class Pools:
    """A connection pool per role, opened on first use in the running event loop and closed
    with `close()`. A connection is checked before it is handed out, so one the server
    dropped is replaced, not returned; when none is free within POOL_WAIT_S, or the server
    cannot be reached, a dedicated connection is tried (and its failure says why)."""

    def __init__(self, settings: Settings, max_size: int = 8) -> None:
        self.settings = settings
        self.max_size = max_size
        self._pools: dict[Role, AsyncConnectionPool[Conn]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def connection(self, role: Role) -> AsyncIterator[Conn]:
        if self._loop is not asyncio.get_running_loop():  # pools live in one event loop
            self._pools, self._loop = {}, asyncio.get_running_loop()
        pool = self._pools.get(role)
        if pool is None:
            wanted = guards(role, self.settings)

            async def verified(conn: Conn) -> None:  # each new connection, as `connect` does
                await verify_guards(conn, wanted, f"the {role} database")

            pool = AsyncConnectionPool(
                dsn_for(role, self.settings), kwargs=_kwargs(role, self.settings), min_size=1,
                max_size=self.max_size, open=False, name=f"{APPLICATION_NAME}-{role}",
                configure=verified, check=AsyncConnectionPool.check_connection,
                timeout=POOL_WAIT_S)
            self._pools[role] = pool
            await pool.open()
        try:
            conn = await pool.getconn()
        except PoolTimeout:  # all busy, or the server is unreachable: a connection of its own
            async with connect(self.settings, role) as conn:  # (which says why it is not)
                yield conn
            return
        try:
            yield conn
        finally:
            await pool.putconn(conn)

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()


def _password(dsn: str) -> list[str]:
    try:
        return [p for p in [parse_dsn(dsn).get("password", "")] if p]
    except ValueError:
        return []
