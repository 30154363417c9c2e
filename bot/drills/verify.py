"""Step 4 of a drill: is the copy complete, intact and as secure as the source? Each check
named, with pass/fail and the evidence."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from bot import extensions
from bot.catalog import TAG
from bot.drills.model import Check, DrillResult, Facts
from bot.settings import Settings

BTREE_SQL = TAG + """
SELECT c.oid::regclass::text AS index, i.indisvalid AS valid
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
"""


class RestoreFailed(Exception):
    """The backup could not be restored; the message carries pg_restore's reason."""


class RolesFailed(Exception):
    """A role the backup names could not be created on the scratch server."""


def failure(error: BaseException) -> Check:
    name = {"RestoreFailed": "restore", "RolesFailed": "roles", "DumpFailed": "backup",
            "NoBackup": "backup",
            "RecoveryFailed": "recovery",
            "ToolMissing": "tools", "ClusterError": "restore"}.get(type(error).__name__, "drill")
    return Check(name, False, " ".join(str(error).split())[:600])


async def indexes(conn: psycopg.AsyncConnection[dict[str, Any]]) -> list[Check]:
    """Every index valid, every B-tree checked with amcheck's bt_index_check (when the scratch
    server has amcheck; otherwise the check says it was skipped)."""
    cur = await conn.execute(TAG + "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'")
    amcheck = await cur.fetchone() is not None
    skipped = "skipped: amcheck is not installed on the scratch server"
    schema = None
    if amcheck:
        try:
            await conn.execute(TAG + "CREATE EXTENSION IF NOT EXISTS amcheck")  # in the copy
        except psycopg.errors.InsufficientPrivilege:
            amcheck = False
            skipped = "skipped: only a superuser may create amcheck in the copy"
        schema = await extensions.schema(conn, "amcheck")  # wherever it was, or is, installed
    cur = await conn.execute(BTREE_SQL)
    rows = await cur.fetchall()
    invalid = [r["index"] for r in rows if not r["valid"]]
    broken = []
    for row in rows if amcheck else []:
        if not row["valid"]:
            continue
        try:
            await conn.execute(sql.SQL(TAG + "SELECT {}({}::regclass)").format(
                extensions.qualified(schema or "public", "bt_index_check"),
                sql.Literal(row["index"])))
        except psycopg.Error as error:
            broken.append(f"{row['index']}: {' '.join(str(error).split())[:120]}")
    return [
        Check("indexes valid", not invalid,
              f"{len(rows)} B-tree indexes" + (f"; invalid: {', '.join(invalid)}" if invalid
                                                else ", all valid")),
        Check("amcheck", not broken,
              "; ".join(broken)[:600] if broken else "bt_index_check passed on every index"
              if amcheck else skipped),
    ]


def compare(source: Facts | None, copy: Facts, result: DrillResult, *,
            snapshot: bool = True, stand_in: str | None = None) -> list[Check]:
    """The copy against the source's facts in the dump's snapshot (`snapshot`), or against the
    live source's facts read now (a team's own dump: its data may be older, so only a table
    empty on the restore but not on the source fails; schema, RLS and grants must match).

    `stand_in`: the role that owns everything in a copy restored without owners; what it holds
    as a table's owner counts as held by the source's owner of that table."""
    checks = []
    result.tables_verified = len(copy.counts)
    result.rows_verified = sum(copy.counts.values())
    result.policies_verified = len(copy.policies)
    if source is None:
        empty = sorted(t for t, n in copy.counts.items() if n == 0)
        checks.append(Check("tables", True, f"{len(copy.counts)} tables restored, "
                            f"{result.rows_verified:,} rows (no counts recorded at backup time)"
                            + (f"; empty: {', '.join(empty[:10])}" if empty else "")))
        return checks
    missing = sorted(set(source.counts) - set(copy.counts))
    checks.append(Check("tables present", not missing,
                        f"all {len(source.counts)} tables present" if not missing
                        else f"missing: {', '.join(missing[:20])}"))
    emptied = sorted(t for t, n in source.counts.items() if n > 0 and copy.counts.get(t) == 0)
    different = sorted(t for t, n in source.counts.items()
                       if t in copy.counts and copy.counts[t] != n and t not in emptied)
    detail = (f"{result.rows_verified:,} rows in {len(copy.counts)} tables equal the source"
              if snapshot else f"{result.rows_verified:,} rows in {len(copy.counts)} tables, "
              "none empty that has rows on the source now")
    problems = []
    if emptied:
        problems.append(f"empty on the restore but not on the source: {', '.join(emptied[:10])}")
    if different:
        problems.append(("" if snapshot else "older than the source now: ") + ", ".join(
            f"{t} {copy.counts[t]:,} instead of {source.counts[t]:,}" for t in different[:10]))
    if problems:
        detail = "; ".join(problems)
    checks.append(Check("row counts", not emptied and (not different or not snapshot), detail))
    if snapshot:
        mismatched = sorted(t for t, f in source.fingerprints.items()
                            if t in copy.fingerprints and copy.fingerprints[t] != f)
        checks.append(Check("content fingerprints", not mismatched,
                            f"{len(source.fingerprints)} tables byte-identical" if not mismatched
                            else f"content differs: {', '.join(mismatched[:10])}"))
    flags = sorted(t for t, f in source.rls.items() if t in copy.rls and copy.rls[t] != f)
    checks.append(Check("RLS flags", not flags,
                        "relrowsecurity/relforcerowsecurity equal on every table" if not flags
                        else f"differ on: {', '.join(flags)}"))
    lost = sorted(f"{p[0]}.{p[1]}: {p[2]}" for p in source.policies - copy.policies)
    extra = sorted(f"{p[0]}.{p[1]}: {p[2]}" for p in copy.policies - source.policies)
    problems = []
    if lost:
        problems.append(f"missing or changed: {', '.join(lost[:10])}")
    if extra:
        problems.append(f"unexpected: {', '.join(extra[:10])}")
    checks.append(Check("RLS policies", not problems,
                        "; ".join(problems) or f"{len(source.policies)} policies equal"))
    checks.append(_owners(source, copy, stand_in))
    copied = {(t, source.owners.get(t, g) if g == stand_in else g, p) for t, g, p in copy.grants}
    missing_grants = sorted(source.grants - copied)
    checks.append(Check("grants", not missing_grants,
                        f"{len(source.grants)} table privileges equal" if not missing_grants
                        else "missing: " + ", ".join(f"{g[1]} {g[2]} on {g[0]}"
                                                     for g in missing_grants[:10])))
    probes = sorted(k for k, v in source.probes.items() if copy.probes.get(k) != v and (
        snapshot or _probe_kind(v) != _probe_kind(copy.probes.get(k))))
    checks.append(Check("RLS probes", not probes,
                        f"{len(source.probes)} probes see what they see on the source"
                        if not probes else "; ".join(
                            f"{k}: source {source.probes[k]}, restore {copy.probes.get(k)}"
                            for k in probes[:8])))
    return checks


def _owners(source: Facts, copy: Facts, stand_in: str | None) -> Check:
    wrong = sorted(t for t, owner in source.owners.items() if t in copy.owners
                   and copy.owners[t] != owner and copy.owners[t] != stand_in)
    if wrong:
        return Check("owners", False, "owned by another role than on the source: " + ", ".join(
            f"{t} by {copy.owners[t]} instead of {source.owners[t]}" for t in wrong[:10]))
    if stand_in is None:
        return Check("owners", True, f"{len(source.owners)} tables owned as on the source")
    names = sorted(set(source.owners.values()))
    return Check("owners", True, f"restored without owners: {stand_in} owns the "
                 f"{len(source.owners)} tables, standing in for {', '.join(names[:10])}")


def _probe_kind(outcome: str | None) -> str | None:
    """What a probe against the live source may be compared on: denied, no rows, or rows."""
    if outcome is None or not outcome.startswith("rows:"):
        return outcome
    return "rows:0" if outcome == "rows:0" else "rows"


def targets(settings: Settings, result: DrillResult) -> list[Check]:
    checks = []
    if settings.rto_target_seconds is not None and result.rto_seconds is not None:
        checks.append(Check("RTO target", result.rto_seconds <= settings.rto_target_seconds,
                            f"{result.rto_seconds:.1f} s against {settings.rto_target_seconds:g}"
                            " s"))
    if settings.rpo_target_seconds is not None:
        ok = result.rpo_seconds is not None and result.rpo_seconds <= settings.rpo_target_seconds
        checks.append(Check("RPO target", ok, (
            f"{result.rpo_seconds:.1f} s" if result.rpo_seconds is not None else "unknown")
            + f" against {settings.rpo_target_seconds:g} s"))
    return checks
