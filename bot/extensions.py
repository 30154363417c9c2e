"""Extensions wherever they are installed. Every call into pg_stat_statements, HypoPG or amcheck
is qualified with the schema `pg_extension` names, so a role whose search_path lacks that schema
(Supabase installs extensions in `extensions`) still reaches them."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from bot.catalog import TAG

SCHEMA_SQL = TAG + """
SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = %s
"""


async def schema(conn: psycopg.AsyncConnection[dict[str, Any]], extension: str) -> str | None:
    """The schema `extension` is installed in, in the connected database; None if it is not."""
    cur = await conn.execute(SCHEMA_SQL, (extension,))
    row = await cur.fetchone()
    return str(row["schema"]) if row else None


def qualified(schema: str, name: str) -> sql.Identifier:
    """`"schema"."name"`: an extension's function or view, whatever the search_path."""
    return sql.Identifier(schema, name)
