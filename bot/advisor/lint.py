"""Schema lint: the weekly checks of a careful database engineer, from a few batched queries.

The catalog is read once (`bot.catalog.snapshot`); every check is a pure function over it, and
the index findings come from cleanup's own `redundant` / `unused`, so lint and cleanup never
disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import psycopg
from pglast import ast, enums, visitors
from pglast.stream import RawStream
from psycopg import sql

from bot import catalog, sqltext
from bot.advisor import cleanup
from bot.advisor.model import Candidate, Drop, quote
from bot.analysis.findings import PER_ROW_FUNCTIONS, per_row_calls
from bot.analysis.model import Finding
from bot.catalog import Policy, Snapshot, Table
from bot.db import connect
from bot.dsn import redact_dsn
from bot.settings import Settings
from bot.units import size_text, span

# The order findings are reported in: what exposes data first, then what slows every query.
KINDS = ("rls_disabled", "rls_per_row_call", "multiple_permissive_policies", "unindexed_fk",
         "no_primary_key", "duplicate_index", "unused_index")
API_ROLES = ("anon", "authenticated")  # Supabase's API roles: always checked when they exist
COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE")

def _sql(template: str, *identifiers: sql.Composable) -> str:
    return sql.SQL(template).format(*identifiers).as_string(None)


def _quoted(table: Table) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


# --- index checks -----------------------------------------------------------------------------


def _unindexed_fks(table: Table) -> list[Finding]:
    found = []
    for fk in table.foreign_keys:
        if any(index.serves_foreign_key(fk) for index in table.indexes):
            continue
        columns = ", ".join(fk.columns)
        candidate = Candidate(table.schema, table.name, tuple(fk.columns))
        fix = candidate.create_sql(concurrently=True) + ";"
        stale = next((i for i in table.indexes if i.name == candidate.name and not i.valid), None)
        if stale is not None:  # a failed CREATE INDEX CONCURRENTLY left it: IF NOT EXISTS skips
            fix = f"{cleanup.drop_sql(table.schema, stale.name)}; {fix}"
        if table.partitioned:  # CONCURRENTLY cannot build a partitioned index in one statement
            fix = (candidate.create_sql().replace(" ON ", " ON ONLY ", 1)
                   .replace("CREATE INDEX", f"CREATE INDEX {quote(candidate.name)}", 1)
                   + "; -- then CREATE INDEX CONCURRENTLY on each partition and ALTER INDEX "
                   f"{quote(candidate.name)} ATTACH PARTITION each of them")
        found.append(Finding(
            "unindexed_fk", table.qualified,
            f"foreign key {fk.name} ({columns}) → {fk.referenced} "
            f"({', '.join(fk.referenced_columns)}) has no index starting with {columns}: "
            f"every DELETE or key UPDATE on {fk.referenced} (~{fk.referenced_rows:,} rows) scans "
            f"{table.qualified} (~{table.rows:,} rows, {size_text(table.size_bytes)}) to check "
            f"it, and joins on {columns} cannot use an index",
            fix))
    return found


def _index_findings(table: Table, snapshot: Snapshot, min_age_days: int) -> list[Finding]:
    found = []
    for r in cleanup.redundant(table):
        found.append(Finding(
            "duplicate_index", table.qualified,
            f"{r.reason}; {r.index.name} takes {size_text(r.index.size_bytes)} and every one of "
            f"the table's {table.index_writes:,} writes in {span(snapshot.stats_days)} also "
            f"updated it ({r.index.scans or 0:,} scans, which {r.keeper.name} can serve)",
            cleanup.drop_sql(table.schema, r.index.name) + ";"))
    for index in cleanup.unused(table, snapshot, min_age_days):
        found.append(Finding(
            "unused_index", table.qualified,
            f"{index.name} ({', '.join(index.keys)}) has not been scanned in "
            f"{snapshot.stats_window}, yet it takes {size_text(index.size_bytes)} and every one "
            f"of the table's {table.index_writes:,} writes in that time also updated it; "
            "statistics are this server's only, so check read replicas before dropping",
            cleanup.drop_sql(table.schema, index.name) + ";"))
    return found


def _no_primary_key(table: Table) -> list[Finding]:
    if any(index.primary for index in table.indexes):
        return []
    ready = next((i for i in table.indexes if i.unique and i.valid and i.predicate is None
                  and i.method == "btree" and i.keys_not_null and 0 not in i.attnums
                  and not i.include and not any(i.options)), None)
    if ready is not None:
        fix = _sql("ALTER TABLE {} ADD PRIMARY KEY USING INDEX {};", _quoted(table),
                   sql.Identifier(ready.name))
    else:
        fix = (_sql("ALTER TABLE {} ADD PRIMARY KEY (<columns that identify a row>);",
                    _quoted(table))
               + " -- on a large table, CREATE UNIQUE INDEX CONCURRENTLY first, then "
               "ADD PRIMARY KEY USING INDEX it, to avoid a long lock")
    return [Finding(
        "no_primary_key", table.qualified,
        f"{table.qualified} (~{table.rows:,} rows) has no primary key: logical replication "
        "(Supabase Realtime, change data capture) cannot publish its UPDATEs and DELETEs, "
        "tools such as pg_repack refuse it, and a row cannot be addressed for certain",
        fix)]


# --- row level security checks ----------------------------------------------------------------


def _rls_disabled(table: Table) -> list[Finding]:
    if table.rls or not table.readable_by:
        return []
    roles = ", ".join(table.readable_by)
    return [Finding(
        "rls_disabled", table.qualified,
        f"row level security is off on {table.qualified} and {roles} can SELECT it: every one "
        f"of its ~{table.rows:,} rows is readable by anyone using that role",
        _sql("ALTER TABLE {} ENABLE ROW LEVEL SECURITY;", _quoted(table))
        + " -- first CREATE POLICY for the rows each role may see (with none it sees no rows), "
        + "or REVOKE SELECT from roles that should not read it")]


class _WrapPerRowCalls(visitors.Visitor):
    """Puts every per-row call that is not already in a sub-select into `(SELECT …)`."""

    def visit_FuncCall(self, ancestors: visitors.Ancestor, node: ast.FuncCall) -> ast.Node | None:
        names = tuple(sqltext.names(node.funcname))
        key = (names[0], names[1]) if len(names) == 2 else (None, names[-1])
        if key not in PER_ROW_FUNCTIONS or ast.SubLink in ancestors:
            return None
        return ast.SubLink(subLinkType=enums.SubLinkType.EXPR_SUBLINK, subselect=ast.SelectStmt(
            targetList=(ast.ResTarget(val=node),), op=enums.SetOperation.SETOP_NONE,
            limitOption=enums.LimitOption.LIMIT_OPTION_DEFAULT))


def wrap_per_row_calls(expression: str) -> str:
    """The policy expression with its per-row calls wrapped: `user_id = (SELECT auth.uid())`."""
    stmt = sqltext.parse_fresh(f"SELECT 1 WHERE {expression}").stmt  # rewritten in place
    assert isinstance(stmt, ast.SelectStmt) and stmt.whereClause is not None
    _WrapPerRowCalls()(stmt)
    return str(RawStream()(stmt.whereClause))


def _rls_per_row_calls(table: Table) -> list[Finding]:
    found = []
    for policy in table.policies:
        calls = sorted({c for e in (policy.qual, policy.with_check) for c in per_row_calls(e)})
        if not calls:
            continue
        clauses = []
        for keyword, expression in (("USING", policy.qual), ("WITH CHECK", policy.with_check)):
            if per_row_calls(expression):
                assert expression is not None
                clauses.append(f"{keyword} ({wrap_per_row_calls(expression)})")
        shown = " / ".join(e for e in (policy.qual, policy.with_check) if e)
        found.append(Finding(
            "rls_per_row_call", table.qualified,
            f"policy {policy.name} ({policy.command} to {', '.join(policy.roles)}) calls "
            f"{', '.join(calls)} once for every row it checks, on ~{table.rows:,} rows: {shown}",
            _sql("ALTER POLICY {} ON {} ", sql.Identifier(policy.name), _quoted(table))
            + " ".join(clauses) + ";"))
    return found


def _applies(policy: Policy, role: str, command: str) -> bool:
    return (policy.permissive and policy.command in ("ALL", command)
            and ("public" in policy.roles or role in policy.roles))


def _multiple_permissive(table: Table) -> list[Finding]:
    roles = sorted({r for p in table.policies for r in p.roles} | {"public"})
    overlaps: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for role in roles:
        for command in COMMANDS:
            names = tuple(p.name for p in table.policies if _applies(p, role, command))
            if len(names) > 1:
                overlaps[names].append(f"{role} {command}")
    found = []
    for names, where in overlaps.items():
        quals = [sqltext.printed_expression(p.qual or p.with_check or "true")
                 for p in table.policies if p.name in names]
        found.append(Finding(
            "multiple_permissive_policies", table.qualified,
            f"policies {', '.join(names)} are all PERMISSIVE for {', '.join(where)}: PostgreSQL "
            "evaluates each of them for every row and ORs the results",
            "merge them into one policy per role and command, USING ("
            + " OR ".join(f"({q})" for q in quals) + "), and drop the others; a policy meant "
            "as an extra condition should be AS RESTRICTIVE"))
    return found


# --- the lint ---------------------------------------------------------------------------------


def app_roles(app_role: str | None) -> list[str]:
    """The roles whose read access rls_disabled checks: every role the API exposes (Supabase's
    anon and authenticated, when they exist) and the application's own."""
    return sorted({*API_ROLES, *([app_role] if app_role else [])})


def check(snapshot: Snapshot, unused_min_age_days: int = cleanup.UNUSED_MIN_AGE_DAYS,
          notes: list[str] | None = None) -> list[Finding]:
    """Every finding the snapshot shows, in KINDS order, then by table."""
    found: list[Finding] = []
    for table in snapshot.tables:
        findings = [*_rls_disabled(table), *_rls_per_row_calls(table),
                *_multiple_permissive(table), *_unindexed_fks(table), *_no_primary_key(table),
                *_index_findings(table, snapshot, unused_min_age_days)]
        if not table.mine:  # e.g. Supabase's storage tables: the platform's, not the team's
            for finding in findings:
                finding.fix += (f" (only {table.owner}, its owner, may: this role is not a "
                                "member of it)")
        found += findings
    if notes is not None and snapshot.stats_days < unused_min_age_days:
        notes.append(f"unused indexes are not reported yet: there are only "
                     f"{snapshot.stats_window}, and {unused_min_age_days} days are needed")
    return sorted(found, key=lambda f: KINDS.index(f.kind))


async def lint(conn: psycopg.AsyncConnection[dict[str, Any]], app_role: str | None,
               schemas: list[str] | None = None, *,
               unused_min_age_days: int = cleanup.UNUSED_MIN_AGE_DAYS,
               notes: list[str] | None = None) -> list[Finding]:
    """Schema findings: missing and redundant indexes, missing keys, RLS gaps and slow policies.

    rls_disabled is checked for `app_role`, or Supabase's `anon` and `authenticated` when
    `app_role` is None and they exist.
    """
    snapshot = await catalog.snapshot(conn, schemas, app_roles(app_role))
    if notes is not None:
        notes += _role_notes(snapshot, app_role)
    return check(snapshot, unused_min_age_days, notes)


def _role_notes(snapshot: Snapshot, app_role: str | None) -> list[str]:
    if app_role and app_role not in snapshot.roles:
        return [f"role {app_role} (HOTDATA_APP_ROLE) does not exist: tables it could read "
                "without row level security were not checked"]
    if snapshot.roles:
        return []
    return ["no application role to check row level security for: set HOTDATA_APP_ROLE "
            "(anon and authenticated do not exist)"]


@dataclass
class LintReport:
    database: str
    checked_at: str
    findings: list[Finding] = field(default_factory=list)
    cleanup: list[Drop] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def run(settings: Settings, *,
              unused_min_age_days: int = cleanup.UNUSED_MIN_AGE_DAYS) -> LintReport:
    """`hotdata lint` and `/hotdata lint`: findings and cleanup proposals from one snapshot,
    read over the read-only analysis connection."""
    target = settings.database_url
    async with connect(settings, "analysis") as conn:
        snapshot = await catalog.snapshot(conn, None, app_roles(settings.app_role))
    report = LintReport(redact_dsn(target),
                        snapshot.now.astimezone(UTC).isoformat(timespec="seconds"))
    report.notes += _role_notes(snapshot, settings.app_role)
    report.findings = check(snapshot, unused_min_age_days, report.notes)
    report.cleanup = cleanup.proposals(snapshot, unused_min_age_days)
    return report
