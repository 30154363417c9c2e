"""Connections to the three databases hotdata talks to, each with the guard rails of its role.

- analysis: the target, read-only (`default_transaction_read_only`) with a statement timeout;
- migrator: the target, autocommit, used only for allow-listed index DDL;
- state: hotdata's own schema;
- scratch: the scratch server's privileged role (drill and review databases, never the target);
- review: a schema review's throwaway role, inside its own review database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from bot.dsn import parse_dsn, redact_dsn, scrub
from bot.settings import Settings

Role = Literal["analysis", "migrator", "state", "scratch", "review"]

APPLICATION_NAME = "hotdata"


class DatabaseUnavailable(Exception):
    """A database could not be reached; the message is safe to show (no password)."""


def _options(role: Role, settings: Settings) -> str:
    if role == "analysis":
        return (f"-c default_transaction_read_only=on "
                f"-c statement_timeout={settings.statement_timeout_ms}")
    if role == "state":
        return "-c statement_timeout=30000"
    return ""


def dsn_for(role: Role, settings: Settings) -> str:
    """The configured URL of a role (a review's throwaway role has none: pass its dsn)."""
    if role == "review":
        raise ValueError("a review connection needs the sandbox's own dsn")
    return {"analysis": settings.database_url, "migrator": settings.migrator_dsn,
            "state": settings.state_dsn, "scratch": settings.scratch_server}[role]


@asynccontextmanager
async def connect(settings: Settings, role: Role, *, dsn: str | None = None,
                  connect_timeout: int = 5
                  ) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    """An autocommit connection for `role`, closed on exit.

    Connection failures become DatabaseUnavailable with the redacted address and libpq's
    reason, scrubbed of every configured secret.
    """
    target = dsn or dsn_for(role, settings)
    try:
        conn = await psycopg.AsyncConnection.connect(
            target, autocommit=True, row_factory=dict_row, connect_timeout=connect_timeout,
            application_name=f"{APPLICATION_NAME}-{role}", options=_options(role, settings),
        )
    except psycopg.OperationalError as error:
        reason = scrub(" ".join(str(error).split()), [*settings.secrets(), *_password(target)])
        raise DatabaseUnavailable(
            f"cannot connect to the {role} database {redact_dsn(target)}: {reason}") from None
    try:
        yield conn
    finally:
        await conn.close()



def _password(dsn: str) -> list[str]:
    try:
        return [p for p in [parse_dsn(dsn).get("password", "")] if p]
    except ValueError:
        return []
