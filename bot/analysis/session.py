"""What the analysis reads from the catalog besides the tables (`bot.catalog`): how the
application's prepared statements are planned, which functions may have side effects, and
whether RLS applies to hotdata's own (owner) plans."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from bot.analysis.model import OwnerRls
from bot.catalog import TAG, Table

# The plan_cache_mode the application's sessions start with, most specific first: its role in
# this database, its role anywhere, this database, all roles, then the server's. Role settings
# apply at login (PostgREST also applies those of the role it switches to). The server's value
# is this session's when nothing overrode it here; when hotdata's own role or database did, the
# configuration file's value is not readable without superuser rights: PostgreSQL's default is
# assumed. Values are stored as written: compared in lower case.
PLAN_CACHE_MODE_SQL = TAG + """
SELECT lower(coalesce(
  (SELECT split_part(c, '=', 2)
   FROM pg_db_role_setting s CROSS JOIN unnest(s.setconfig) AS c
   WHERE split_part(c, '=', 1) = 'plan_cache_mode'
     AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
     AND (s.setrole = 0 OR s.setrole = (SELECT oid FROM pg_roles WHERE rolname = %s))
   ORDER BY s.setrole = 0, s.setdatabase = 0 LIMIT 1),
  (SELECT CASE WHEN source IN ('default', 'configuration file', 'command line',
                               'environment variable') THEN setting ELSE boot_val END
   FROM pg_settings WHERE name = 'plan_cache_mode'))) AS mode
"""


async def plan_cache_mode(conn: psycopg.AsyncConnection[dict[str, Any]],
                          app_role: str | None) -> str:
    """How the application's prepared statements are planned: `auto` (PostgreSQL may switch
    to a generic plan), `force_custom_plan` or `force_generic_plan`."""
    cur = await conn.execute(PLAN_CACHE_MODE_SQL, (app_role,))
    row = await cur.fetchone()
    return str(row["mode"]) if row and row["mode"] else "auto"


# Volatile functions that only read the clock or draw random numbers: safe to execute.
HARMLESS_VOLATILE = {"random", "random_normal", "clock_timestamp", "timeofday",
                     "gen_random_uuid", "uuid_generate_v4"}

VOLATILE_SQL = TAG + """
SELECT DISTINCT p.proname AS name FROM pg_proc p
WHERE p.proname = ANY(%s::text[]) AND p.provolatile = 'v'
"""


async def volatile_functions(conn: psycopg.AsyncConnection[dict[str, Any]],
                             names: set[str]) -> set[str]:
    """Which of `names` may have side effects (any overload VOLATILE, e.g. advisory locks,
    nextval, pg_terminate_backend): a statement calling one is never executed."""
    if not names:
        return set()
    cur = await conn.execute(VOLATILE_SQL, (sorted(names),))
    return {row["name"] for row in await cur.fetchall()} - HARMLESS_VOLATILE


# row_security_active: RLS enabled, and the session's role neither superuser, BYPASSRLS nor
# (unless FORCE ROW LEVEL SECURITY) the table's owner or a member inheriting from it.
RLS_ACTIVE_SQL = TAG + """
SELECT current_user AS role,
       array(SELECT t FROM unnest(%s::oid[]) AS t WHERE row_security_active(t)) AS oids
"""


async def owner_rls(conn: psycopg.AsyncConnection[dict[str, Any]],
                    tables: Iterable[Table]) -> OwnerRls | None:
    """Which of `tables` the owner plans (this session's role) read under RLS, or None."""
    with_rls = {t.oid: t.qualified for t in tables if t.rls}
    if not with_rls:
        return None
    cur = await conn.execute(RLS_ACTIVE_SQL, (list(with_rls),))
    row = await cur.fetchone()
    if row is None or not row["oids"]:
        return None
    return OwnerRls(row["role"], sorted(with_rls[oid] for oid in row["oids"]))
