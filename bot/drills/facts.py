"""Reading what a restore must preserve: exact row counts, content fingerprints, RLS flags,
policies, grants and what RLS probes see — the same queries on the source and on the copy."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from bot.catalog import TAG
from bot.drills.model import Facts

SKIP_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "hotdata")

TABLES_SQL = TAG + """
SELECT n.nspname AS schema, c.relname AS name, c.relrowsecurity AS rls,
       c.relforcerowsecurity AS forced, pg_relation_size(c.oid) AS bytes,
       pg_get_userbyid(c.relowner) AS owner
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
POLICIES_SQL = TAG + """
SELECT schemaname, tablename, policyname, permissive, roles::text[] AS roles, cmd,
       coalesce(qual, '') AS qual, coalesce(with_check, '') AS with_check
FROM pg_policies WHERE schemaname <> ALL(%s)
"""
# Named schema-qualified whatever the search_path; an extension's own objects are left out
# (their grants come with the extension, whoever created it on each server).
GRANTS_SQL = TAG + """
SELECT format('%%I.%%I', n.nspname, c.relname) AS tbl, coalesce(r.rolname, 'PUBLIC') AS grantee,
       a.privilege_type AS privilege
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) a
LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname <> ALL(%s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""
HEARTBEAT_SQL = TAG + """
SELECT CASE WHEN to_regclass('hotdata.heartbeat') IS NULL THEN NULL
            ELSE (SELECT at FROM hotdata.heartbeat WHERE id = 1) END AS at
"""


def _table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


async def read(conn: psycopg.AsyncConnection[dict[str, Any]], *, fingerprint_max_bytes: int,
               app_role: str | None, claims: str | None) -> Facts:
    """Facts of the connected database. Run it inside one REPEATABLE READ transaction to get
    them from one snapshot (the dump's)."""
    facts = Facts()
    cur = await conn.execute(TABLES_SQL, (list(SKIP_SCHEMAS),))
    tables = await cur.fetchall()
    for t in tables:
        key = f"{t['schema']}.{t['name']}"
        facts.rls[key] = (t["rls"], t["forced"])
        facts.owners[key] = t["owner"]
        cur = await conn.execute(sql.SQL(TAG + "SELECT count(*) AS n FROM {}").format(
            _table(t["schema"], t["name"])))
        row = await cur.fetchone()
        facts.counts[key] = int(row["n"]) if row else 0
        if t["bytes"] <= fingerprint_max_bytes:
            cur = await conn.execute(sql.SQL(
                TAG + "SELECT md5(coalesce(string_agg(h, '' ORDER BY h), '')) AS f "
                "FROM (SELECT md5(t::text) AS h FROM {} t) rows").format(
                    _table(t["schema"], t["name"])))
            row = await cur.fetchone()
            facts.fingerprints[key] = row["f"] if row else ""
    cur = await conn.execute(POLICIES_SQL, (list(SKIP_SCHEMAS),))
    facts.policies = {(r["schemaname"], r["tablename"], r["policyname"], r["permissive"],
                       ",".join(sorted(r["roles"])), r["cmd"], r["qual"], r["with_check"])
                      for r in await cur.fetchall()}
    cur = await conn.execute(GRANTS_SQL, (list(SKIP_SCHEMAS),))
    facts.grants = {(r["tbl"], r["grantee"], r["privilege"]) for r in await cur.fetchall()}
    cur = await conn.execute(HEARTBEAT_SQL)
    row = await cur.fetchone()
    facts.heartbeat = row["at"] if row else None
    rls_tables = [k for k, (enabled, _) in facts.rls.items() if enabled]
    facts.probes = await probes(conn, rls_tables, app_role, claims)
    return facts


async def probes(conn: psycopg.AsyncConnection[dict[str, Any]], tables: list[str],
                 app_role: str | None, claims: str | None) -> dict[str, str]:
    """What each role sees of each RLS table: `rows:N` or the error. Runs in savepoints, so
    it works inside the caller's snapshot transaction."""
    cur = await conn.execute(TAG + "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                             ([r for r in (app_role, "anon") if r],))
    roles = {r["rolname"] for r in await cur.fetchall()}
    cases = []
    if app_role and app_role in roles:
        if claims:
            cases.append(("app with claims", app_role, claims))
        cases.append(("app without claims", app_role, "{}"))
    if "anon" in roles and app_role != "anon":
        cases.append(("anon", "anon", "{}"))
    seen: dict[str, str] = {}
    for label, role, jwt in cases:
        sub = json.loads(jwt).get("sub") if jwt else None
        for table in tables:
            schema, name = table.split(".", 1)
            try:
                async with conn.transaction():
                    try:
                        await conn.execute(sql.SQL(TAG + "SET LOCAL ROLE {}").format(
                            sql.Identifier(role)))
                    except psycopg.errors.InsufficientPrivilege:
                        seen[f"{label}: {table}"] = (
                            f"not probed: {conn.info.user} may not SET ROLE {role}")
                        raise _Rollback from None
                    await conn.execute(
                        TAG + "SELECT set_config('request.jwt.claims', %s, true), "
                        "set_config('request.jwt.claim.sub', %s, true)", (jwt, sub or ""))
                    cur = await conn.execute(sql.SQL(TAG + "SELECT count(*) AS n FROM {}")
                                             .format(_table(schema, name)))
                    row = await cur.fetchone()
                    seen[f"{label}: {table}"] = f"rows:{row['n'] if row else 0}"
                    raise _Rollback
            except _Rollback:
                pass
            except psycopg.errors.InsufficientPrivilege:
                seen[f"{label}: {table}"] = "denied"
    return seen


class _Rollback(Exception):
    """Leaves the savepoint without keeping the role change."""
