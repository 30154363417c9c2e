"""Catalog facts about the tables a workload touches, fetched in a few batched queries."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from bot.analysis.sqltext import Relation

TAG = "/* hotdata */ "  # marks hotdata's own statements so pg_stat_statements readers skip them


@dataclass
class Index:
    name: str
    columns: list[str]
    valid: bool
    unique: bool
    primary: bool
    predicate: str | None
    size_bytes: int
    definition: str


@dataclass
class Policy:
    name: str
    command: str
    roles: list[str]
    permissive: bool
    qual: str | None
    with_check: str | None


@dataclass
class Table:
    oid: int
    schema: str
    name: str
    rows: int
    size_bytes: int
    rls: bool
    force_rls: bool
    columns: list[str] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


RESOLVE_SQL = TAG + """
SELECT r.key, c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name,
       greatest(c.reltuples, 0)::bigint AS rows, pg_total_relation_size(c.oid) AS size_bytes,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls,
       array(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) AS columns
FROM unnest(%(keys)s::text[], %(schemas)s::text[], %(names)s::text[]) AS r(key, s, n)
JOIN pg_class c ON c.oid = to_regclass(
       CASE WHEN r.s IS NULL THEN quote_ident(r.n)
            ELSE quote_ident(r.s) || '.' || quote_ident(r.n) END)
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm')
"""

INDEXES_SQL = TAG + """
SELECT i.indrelid::bigint AS table_oid, ic.relname AS name, i.indisvalid AS valid,
       i.indisunique AS unique, i.indisprimary AS primary,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true)
                    || CASE WHEN i.indoption[k - 1] & 1 = 1 THEN ' DESC' ELSE '' END
             FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k) AS columns,
       pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       pg_relation_size(i.indexrelid) AS size_bytes, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY(%s::oid[])
ORDER BY ic.relname
"""

POLICIES_SQL = TAG + """
SELECT schemaname AS schema, tablename AS table, policyname AS name, cmd AS command,
       roles::text[] AS roles, permissive = 'PERMISSIVE' AS permissive, qual, with_check
FROM pg_policies WHERE (schemaname || '.' || tablename) = ANY(%s::text[])
ORDER BY policyname
"""


async def tables(conn: psycopg.AsyncConnection[dict],
                 relations: list[Relation]) -> dict[str, Table]:
    """relation key as written in the query (`name` or `schema.name`) → Table."""
    unique = {r.key: r for r in relations}
    if not unique:
        return {}
    cur = await conn.execute(RESOLVE_SQL, {
        "keys": list(unique), "schemas": [r.schema for r in unique.values()],
        "names": [r.name for r in unique.values()]})
    rows = await cur.fetchall()
    by_oid: dict[int, Table] = {}
    found: dict[str, Table] = {}
    for row in rows:
        table = by_oid.setdefault(row["oid"], Table(
            row["oid"], row["schema"], row["name"], row["rows"], row["size_bytes"],
            row["rls"], row["force_rls"], list(row["columns"])))
        found[row["key"]] = table
    if by_oid:
        cur = await conn.execute(INDEXES_SQL, (list(by_oid),))
        for row in await cur.fetchall():
            by_oid[row["table_oid"]].indexes.append(Index(
                row["name"], list(row["columns"]), row["valid"], row["unique"], row["primary"],
                row["predicate"], row["size_bytes"], row["definition"]))
        qualified = {t.qualified: t for t in by_oid.values()}
        cur = await conn.execute(POLICIES_SQL, (list(qualified),))
        for row in await cur.fetchall():
            qualified[f"{row['schema']}.{row['table']}"].policies.append(Policy(
                row["name"], row["command"], list(row["roles"]), row["permissive"], row["qual"],
                row["with_check"]))
    return found


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


async def plan_cache_mode(conn: psycopg.AsyncConnection[dict], app_role: str | None) -> str:
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


async def volatile_functions(conn: psycopg.AsyncConnection[dict], names: set[str]) -> set[str]:
    """Which of `names` may have side effects (any overload VOLATILE, e.g. advisory locks,
    nextval, pg_terminate_backend): a statement calling one is never executed."""
    if not names:
        return set()
    cur = await conn.execute(VOLATILE_SQL, (sorted(names),))
    return {row["name"] for row in await cur.fetchall()} - HARMLESS_VOLATILE
