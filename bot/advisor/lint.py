"""Schema lint: the weekly checks of a careful database engineer, from a few batched queries.

The catalog is read once (`facts`: five queries whatever the number of tables) into plain
dataclasses; every check is a pure function over them, and cleanup.py proposes its drops from the
same `redundant` / `unused` functions, so lint and cleanup never disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from pglast import ast, enums, visitors
from pglast.stream import RawStream
from psycopg import sql

from bot.advisor.model import Candidate, quote
from bot.analysis import sqltext
from bot.analysis.catalog import POLICIES_SQL, TAG, Policy
from bot.analysis.findings import PER_ROW_FUNCTIONS, per_row_calls
from bot.analysis.model import Finding
from bot.db import connect
from bot.dsn import redact_dsn
from bot.settings import Settings

# The order findings are reported in: what exposes data first, then what slows every query.
KINDS = ("rls_disabled", "rls_per_row_call", "multiple_permissive_policies", "unindexed_fk",
         "no_primary_key", "duplicate_index", "unused_index")
API_ROLES = ("anon", "authenticated")  # Supabase's API roles, checked when no app role is set
COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE")
UNUSED_MIN_AGE_DAYS = 7

CONTEXT_SQL = TAG + """
SELECT now() AS now,
       coalesce((SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
                pg_postmaster_start_time()) AS stats_since,
       (SELECT stats_reset FROM pg_stat_database
        WHERE datname = current_database()) IS NOT NULL AS stats_were_reset,
       array(SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%(roles)s::text[])
             ORDER BY rolname) AS roles
"""

TABLES_SQL = TAG + """
SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name,
       greatest(c.reltuples, 0)::bigint AS rows, pg_total_relation_size(c.oid) AS size_bytes,
       c.relrowsecurity AS rls, c.relkind = 'p' AS partitioned,
       coalesce(s.n_tup_ins, 0) AS inserts, coalesce(s.n_tup_upd, 0) AS updates,
       coalesce(s.n_tup_hot_upd, 0) AS hot_updates, coalesce(s.n_tup_del, 0) AS deletes,
       array(SELECT r.rolname::text FROM pg_roles r
             WHERE r.rolname = ANY(%(roles)s::text[])
               AND has_schema_privilege(r.oid, n.oid, 'USAGE')
               AND has_any_column_privilege(r.oid, c.oid, 'SELECT')
             ORDER BY r.rolname) AS readable_by
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> ALL(%(excluded)s::text[]) AND n.nspname !~ '^pg_'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

INDEXES_SQL = TAG + """
SELECT i.indrelid::bigint AS table_oid, i.indexrelid::bigint AS oid, ic.relname AS name,
       am.amname AS method, i.indnkeyatts AS nkeys,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true)
             FROM generate_series(1, i.indnatts) AS k ORDER BY k) AS columns,
       i.indkey::int2[] AS attnums, i.indclass::oid[]::bigint[] AS opclasses,
       i.indcollation::oid[]::bigint[] AS collations, i.indoption::int2[] AS options,
       pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       i.indisvalid AS valid, i.indisunique AS unique, i.indisprimary AS primary,
       i.indisreplident AS replica_identity,
       array(SELECT co.conname::text FROM pg_constraint co WHERE co.conindid = i.indexrelid
             ORDER BY co.conname) AS constraints,
       s.idx_scan AS scans, pg_relation_size(i.indexrelid) AS size_bytes,
       NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = i.indrelid
                   AND a.attnum = ANY(i.indkey::int2[]) AND NOT a.attnotnull) AS keys_not_null
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
WHERE i.indrelid = ANY(%s::bigint[]::oid[])
ORDER BY i.indrelid, ic.relname
"""

FOREIGN_KEYS_SQL = TAG + """
SELECT co.conrelid::bigint AS table_oid, co.conname AS name, co.conkey::int2[] AS attnums,
       array(SELECT a.attname::text FROM unnest(co.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord) AS columns,
       rn.nspname || '.' || rc.relname AS referenced,
       array(SELECT a.attname::text FROM unnest(co.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.attnum
             ORDER BY k.ord) AS referenced_columns,
       greatest(rc.reltuples, 0)::bigint AS referenced_rows
FROM pg_constraint co
JOIN pg_class rc ON rc.oid = co.confrelid
JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE co.contype = 'f' AND co.conparentid = 0 AND co.conrelid = ANY(%s::bigint[]::oid[])
ORDER BY co.conrelid, co.conname
"""


# --- facts ------------------------------------------------------------------------------------


@dataclass
class IndexFacts:
    oid: int
    name: str
    method: str
    nkeys: int
    columns: list[str]  # key columns then INCLUDE columns, as pg_get_indexdef prints them
    attnums: list[int]  # 0 for an expression key
    opclasses: list[int]
    collations: list[int]
    options: list[int]  # per key: DESC, NULLS FIRST bits
    predicate: str | None
    valid: bool
    unique: bool
    primary: bool
    replica_identity: bool
    constraints: list[str]  # constraints that use this index (its own, or foreign keys to it)
    scans: int | None
    size_bytes: int
    keys_not_null: bool

    @property
    def keys(self) -> list[tuple[str, int, int, int]]:
        """What makes two keys the same key: column or expression, opclass, collation, order."""
        return [(self.columns[k], self.opclasses[k], self.collations[k], self.options[k])
                for k in range(self.nkeys)]

    @property
    def key_columns(self) -> list[str]:
        return self.columns[:self.nkeys]

    @property
    def include(self) -> list[str]:
        return self.columns[self.nkeys:]

    @property
    def protected(self) -> str | None:
        """Why dropping this index is never proposed, or None."""
        if self.primary:
            return "it is the primary key"
        if self.constraints:
            return f"constraint {', '.join(self.constraints)} uses it"
        if self.replica_identity:
            return "it is the table's replica identity"
        return None

    def serves_foreign_key(self, fk: ForeignKey) -> bool:
        """Its leading keys are the foreign key's columns, in any order, on every row."""
        width = len(fk.attnums)
        leading = self.attnums[:min(width, self.nkeys)]
        return (self.valid and self.predicate is None and self.method in ("btree", "hash")
                and len(leading) == width and sorted(leading) == sorted(fk.attnums))


@dataclass
class ForeignKey:
    name: str
    attnums: list[int]
    columns: list[str]
    referenced: str
    referenced_columns: list[str]
    referenced_rows: int


@dataclass
class TableFacts:
    oid: int
    schema: str
    name: str
    rows: int
    size_bytes: int
    rls: bool
    partitioned: bool
    inserts: int
    updates: int
    hot_updates: int
    deletes: int
    readable_by: list[str]
    indexes: list[IndexFacts] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def index_writes(self) -> int:
        """Writes that touched every index since statistics began (HOT updates touch none)."""
        return self.inserts + max(self.updates - self.hot_updates, 0) + self.deletes


@dataclass
class Snapshot:
    """Everything lint and cleanup look at, read at one moment."""

    tables: list[TableFacts]
    now: datetime
    stats_since: datetime
    stats_were_reset: bool
    roles: list[str]  # the application roles that exist, checked for rls_disabled

    @property
    def stats_days(self) -> float:
        return max((self.now - self.stats_since).total_seconds(), 0.0) / 86400

    @property
    def stats_window(self) -> str:
        origin = "the last statistics reset" if self.stats_were_reset else "the server start"
        since = self.stats_since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"{span(self.stats_days)} of statistics (since {origin}, {since})"


async def facts(conn: psycopg.AsyncConnection[dict], schemas: list[str] | None = None,
                roles: list[str] | tuple[str, ...] = ()) -> Snapshot:
    """The tables of `schemas` (default: every schema but the system's and hotdata's), their
    indexes with usage statistics, foreign keys and policies; which of `roles` may read each."""
    cur = await conn.execute(CONTEXT_SQL, {"roles": list(roles)})
    context = await cur.fetchone()
    assert context is not None
    cur = await conn.execute(TABLES_SQL, {"roles": list(roles), "schemas": schemas,
                                          "excluded": sorted(sqltext.CATALOG_SCHEMAS)})
    tables = {row["oid"]: TableFacts(**row) for row in await cur.fetchall()}
    if tables:
        cur = await conn.execute(INDEXES_SQL, (list(tables),))
        for row in await cur.fetchall():
            oid = row.pop("table_oid")
            tables[oid].indexes.append(IndexFacts(**{
                **row, "columns": list(row["columns"]), "attnums": list(row["attnums"]),
                "opclasses": list(row["opclasses"]), "collations": list(row["collations"]),
                "options": list(row["options"]), "constraints": list(row["constraints"])}))
        cur = await conn.execute(FOREIGN_KEYS_SQL, (list(tables),))
        for row in await cur.fetchall():
            oid = row.pop("table_oid")
            tables[oid].foreign_keys.append(ForeignKey(**{
                **row, "attnums": list(row["attnums"]), "columns": list(row["columns"]),
                "referenced_columns": list(row["referenced_columns"])}))
        qualified = {t.qualified: t for t in tables.values()}
        cur = await conn.execute(POLICIES_SQL, (list(qualified),))
        for row in await cur.fetchall():
            qualified[f"{row['schema']}.{row['table']}"].policies.append(Policy(
                row["name"], row["command"], list(row["roles"]), row["permissive"], row["qual"],
                row["with_check"]))
    return Snapshot(list(tables.values()), context["now"], context["stats_since"],
                    context["stats_were_reset"], list(context["roles"]))


# --- helpers shared with cleanup and rendering ------------------------------------------------


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TB"  # pragma: no cover


def span(days: float) -> str:
    if days >= 2:
        return f"{days:.1f} days"
    if days * 24 >= 1:
        return f"{days * 24:.1f} hours"
    return f"{max(round(days * 1440), 0)} minutes"


def _sql(template: str, *identifiers: sql.Composable) -> str:
    return sql.SQL(template).format(*identifiers).as_string(None)


def drop_sql(schema: str, index: str) -> str:
    """`DROP INDEX CONCURRENTLY IF EXISTS "schema"."index"` for catalog names."""
    return _sql("DROP INDEX CONCURRENTLY IF EXISTS {}", sql.Identifier(schema, index))


def _quoted(table: TableFacts) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


# --- index checks -----------------------------------------------------------------------------


@dataclass
class Redundancy:
    """`index` can go: `keeper` serves every lookup it serves."""

    index: IndexFacts
    keeper: IndexFacts
    exact: bool

    @property
    def reason(self) -> str:
        keys = ", ".join(self.index.key_columns)
        where = f" WHERE {self.index.predicate}" if self.index.predicate else ""
        if self.exact:
            return (f"{self.index.name} duplicates {self.keeper.name}: same keys ({keys}){where}")
        return (f"{self.index.name} ({keys}) is a prefix of {self.keeper.name} "
                f"({', '.join(self.keeper.key_columns)}){where}, which serves the same lookups")


def _keep_rank(index: IndexFacts) -> tuple[bool, bool, bool, int, int]:
    """Which of two equivalent indexes to keep: the constrained, the unique, the used, the older."""
    return (index.protected is not None, index.unique, index.scans is not None,
            index.scans or 0, -index.oid)


def _covers(keeper: IndexFacts, index: IndexFacts) -> bool | None:
    """True: `index` is an exact duplicate of `keeper`; False: a redundant prefix of it;
    None: `keeper` does not make `index` redundant."""
    if not (keeper.valid and index.valid and keeper.method == index.method
            and keeper.predicate == index.predicate):
        return None
    if index.keys == keeper.keys and index.include == keeper.include:
        return True
    if (index.method == "btree" and not index.unique
            and keeper.keys[:len(index.keys)] == index.keys
            and (len(keeper.keys) > len(index.keys) or set(index.include) < set(keeper.include))
            and set(index.include) <= set(keeper.columns)):
        return False
    return None


def redundant(table: TableFacts) -> list[Redundancy]:
    """Duplicate and prefix-redundant indexes of `table`, each with the index that stays.

    The widest indexes are considered first, so every keeper stays; primary keys, indexes
    behind constraints and the replica identity are never the one to drop. Partitioned tables
    are left out: their indexes cannot be dropped CONCURRENTLY.
    """
    if table.partitioned:
        return []
    order = sorted(table.indexes, key=lambda i: (len(i.columns), _keep_rank(i)), reverse=True)
    kept: list[IndexFacts] = []
    found = []
    for index in order:
        keeper = None
        if index.protected is None:
            for candidate in kept:
                exact = _covers(candidate, index)
                if exact is not None:
                    keeper = candidate
                    found.append(Redundancy(index, candidate, exact))
                    break
        if keeper is None:
            kept.append(index)
    return found


def unused(table: TableFacts, snapshot: Snapshot,
           min_age_days: int = UNUSED_MIN_AGE_DAYS) -> list[IndexFacts]:
    """Indexes never scanned in statistics at least `min_age_days` old. Not reported: unique and
    constrained indexes (they enforce something), the keeper of a redundant index, and the only
    index serving a foreign key (deletes on the referenced table need it)."""
    if snapshot.stats_days < min_age_days or table.partitioned:
        return []
    redundancies = redundant(table)
    keepers = {r.keeper.oid for r in redundancies}
    dropped = {r.index.oid for r in redundancies}
    found = []
    for index in table.indexes:
        if (index.scans != 0 or not index.valid or index.unique or index.protected
                or index.oid in keepers):
            continue
        others = [i for i in table.indexes if i.oid != index.oid and i.oid not in dropped]
        if any(index.serves_foreign_key(fk) and not any(o.serves_foreign_key(fk) for o in others)
               for fk in table.foreign_keys):
            continue
        found.append(index)
    return found


def _unindexed_fks(table: TableFacts) -> list[Finding]:
    found = []
    for fk in table.foreign_keys:
        if any(index.serves_foreign_key(fk) for index in table.indexes):
            continue
        columns = ", ".join(fk.columns)
        candidate = Candidate(table.schema, table.name, tuple(fk.columns))
        fix = candidate.create_sql(concurrently=True) + ";"
        stale = next((i for i in table.indexes if i.name == candidate.name and not i.valid), None)
        if stale is not None:  # a failed CREATE INDEX CONCURRENTLY left it: IF NOT EXISTS skips
            fix = f"{drop_sql(table.schema, stale.name)}; {fix}"
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


def _index_findings(table: TableFacts, snapshot: Snapshot, min_age_days: int) -> list[Finding]:
    found = []
    for r in redundant(table):
        found.append(Finding(
            "duplicate_index", table.qualified,
            f"{r.reason}; {r.index.name} takes {size_text(r.index.size_bytes)} and every one of "
            f"the table's {table.index_writes:,} writes in {span(snapshot.stats_days)} also "
            f"updated it ({r.index.scans or 0:,} scans, which {r.keeper.name} can serve)",
            drop_sql(table.schema, r.index.name) + ";"))
    for index in unused(table, snapshot, min_age_days):
        found.append(Finding(
            "unused_index", table.qualified,
            f"{index.name} ({', '.join(index.key_columns)}) has not been scanned in "
            f"{snapshot.stats_window}, yet it takes {size_text(index.size_bytes)} and every one "
            f"of the table's {table.index_writes:,} writes in that time also updated it; "
            "statistics are this server's only, so check read replicas before dropping",
            drop_sql(table.schema, index.name) + ";"))
    return found


def _no_primary_key(table: TableFacts) -> list[Finding]:
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


def _rls_disabled(table: TableFacts) -> list[Finding]:
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
        names = tuple(n.sval for n in node.funcname if isinstance(n, ast.String))
        key = (names[0], names[1]) if len(names) == 2 else (None, names[-1])
        if key not in PER_ROW_FUNCTIONS or ast.SubLink in ancestors:
            return None
        return ast.SubLink(subLinkType=enums.SubLinkType.EXPR_SUBLINK, subselect=ast.SelectStmt(
            targetList=(ast.ResTarget(val=node),), op=enums.SetOperation.SETOP_NONE,
            limitOption=enums.LimitOption.LIMIT_OPTION_DEFAULT))


def wrap_per_row_calls(expression: str) -> str:
    """The policy expression with its per-row calls wrapped: `user_id = (SELECT auth.uid())`."""
    stmt = sqltext.parse_fresh(f"SELECT 1 WHERE {expression}").stmt  # rewritten in place
    _WrapPerRowCalls()(stmt)
    return str(RawStream()(stmt.whereClause))


def _normal(expression: str) -> str:
    """An expression as pglast prints it (no redundant outer parentheses); as is if unparseable."""
    try:
        stmt = sqltext.parse_one(f"SELECT 1 WHERE {expression}").stmt
    except sqltext.Unparseable:
        return expression
    return str(RawStream()(stmt.whereClause))


def _rls_per_row_calls(table: TableFacts) -> list[Finding]:
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


def _multiple_permissive(table: TableFacts) -> list[Finding]:
    roles = sorted({r for p in table.policies for r in p.roles} | {"public"})
    overlaps: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for role in roles:
        for command in COMMANDS:
            names = tuple(p.name for p in table.policies if _applies(p, role, command))
            if len(names) > 1:
                overlaps[names].append(f"{role} {command}")
    found = []
    for names, where in overlaps.items():
        quals = [_normal(p.qual or p.with_check or "true")
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
    """The roles whose read access rls_disabled checks."""
    return [app_role] if app_role else list(API_ROLES)


def check(snapshot: Snapshot, unused_min_age_days: int = UNUSED_MIN_AGE_DAYS,
          notes: list[str] | None = None) -> list[Finding]:
    """Every finding the snapshot shows, in KINDS order, then by table."""
    found: list[Finding] = []
    for table in snapshot.tables:
        found += _rls_disabled(table)
        found += _rls_per_row_calls(table)
        found += _multiple_permissive(table)
        found += _unindexed_fks(table)
        found += _no_primary_key(table)
        found += _index_findings(table, snapshot, unused_min_age_days)
    if notes is not None and snapshot.stats_days < unused_min_age_days:
        notes.append(f"unused indexes are not reported yet: there are only "
                     f"{snapshot.stats_window}, and {unused_min_age_days} days are needed")
    return sorted(found, key=lambda f: KINDS.index(f.kind))


async def lint(conn: psycopg.AsyncConnection[dict], app_role: str | None,
               schemas: list[str] | None = None, *,
               unused_min_age_days: int = UNUSED_MIN_AGE_DAYS,
               notes: list[str] | None = None) -> list[Finding]:
    """Schema findings: missing and redundant indexes, missing keys, RLS gaps and slow policies.

    rls_disabled is checked for `app_role`, or Supabase's `anon` and `authenticated` when
    `app_role` is None and they exist.
    """
    snapshot = await facts(conn, schemas, app_roles(app_role))
    if notes is not None:
        notes += _role_notes(snapshot, app_role)
    return check(snapshot, unused_min_age_days, notes)


def _role_notes(snapshot: Snapshot, app_role: str | None) -> list[str]:
    if snapshot.roles:
        return []
    if app_role:
        return [f"role {app_role} (HOTDATA_APP_ROLE) does not exist: tables readable without "
                "row level security were not checked"]
    return ["no application role to check row level security for: set HOTDATA_APP_ROLE "
            "(anon and authenticated do not exist)"]


@dataclass
class LintReport:
    database: str
    checked_at: str
    findings: list[Finding] = field(default_factory=list)
    cleanup: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def run(settings: Settings, *, dsn: str | None = None,
              unused_min_age_days: int = UNUSED_MIN_AGE_DAYS) -> LintReport:
    """`hotdata lint` and `/hotdata lint`: findings and cleanup proposals from one snapshot,
    read over the read-only analysis connection."""
    from bot.advisor import cleanup  # cleanup builds on this module

    target = dsn or settings.database_url
    async with connect(settings, "analysis", dsn=target) as conn:
        snapshot = await facts(conn, None, app_roles(settings.app_role))
    report = LintReport(redact_dsn(target),
                        snapshot.now.astimezone(UTC).isoformat(timespec="seconds"))
    report.notes += _role_notes(snapshot, settings.app_role)
    report.findings = check(snapshot, unused_min_age_days, report.notes)
    report.cleanup = cleanup.proposals(snapshot, unused_min_age_days)
    return report
