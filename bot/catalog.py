"""What the catalog says about tables: one model (`Table`, `Index`, `ForeignKey`, `Policy`), two
loaders (the relations a workload names; whole schemas with their statistics), and one rule
for "an existing index already serves this" (`Index.serves`). The analysis, the advisor, lint,
cleanup and schema documentation all read tables through here.

Each loader sends a handful of batched queries, whatever the number of tables.

Here too: `TAG`, which marks the text of hotdata's own statements (pg_stat_statements readers
skip them), and the one place where the SQL differs with the server's PostgreSQL version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from bot import sqltext
from bot.units import span

MARK = "/* hotdata */"  # in the text of each of hotdata's own statements
_FIRST_KEYWORD = re.compile(r"\s*[A-Za-z]+")


class _Tag(str):
    """`TAG + text` is `text` marked as hotdata's: MARK after its first keyword
    (`SELECT /* hotdata */ …`), where every PostgreSQL version keeps it. PostgreSQL 18 records a
    statement's text from its first token on, so a leading comment would be lost there."""

    def __add__(self, text: str) -> str:
        keyword = _FIRST_KEYWORD.match(text)
        if keyword is None:
            return f"{MARK} {text}"
        return f"{keyword.group(0)} {MARK}{text[keyword.end():]}"


TAG = _Tag(MARK + " ")  # `TAG + "SELECT …"` (an f-string puts MARK first, lost on 18)


@dataclass
class Policy:
    name: str
    command: str
    roles: list[str]
    permissive: bool
    qual: str | None
    with_check: str | None


@dataclass
class ForeignKey:
    name: str
    attnums: list[int]
    columns: list[str]
    referenced: str
    referenced_columns: list[str]
    referenced_rows: int


# A B-tree whose keys lead a wider index's is kept beside it when it takes at most this share
# of the wider one's bytes: it is deduplicated where the wider one is not (equal keys share one
# entry; an INCLUDE column or a near-unique further key prevents that), so a scan that reads
# many of its entries, a count over a common value, reads that many fewer pages. Planner costs
# do not show it (HypoPG's hypothetical indexes are never deduplicated), sizes do.
PREFIX_KEPT_SHARE = 0.5


def kept_beside(narrow_bytes: int, wide_bytes: int) -> bool:
    """Whether an index of `narrow_bytes` is worth keeping beside a wider index of
    `wide_bytes` that serves every lookup it serves."""
    return 0 < narrow_bytes <= PREFIX_KEPT_SHARE * wide_bytes


@dataclass
class Index:
    """An index as the catalog holds it. `keys` are its key columns (or expressions) as
    `pg_get_indexdef` prints them, bare; `descending` says which keys sort DESC."""

    name: str
    keys: list[str]
    descending: list[bool] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    predicate: str | None = None
    valid: bool = True
    unique: bool = False
    primary: bool = False
    method: str = "btree"
    plain: list[bool] = field(default_factory=list)  # per key: default opclass and collation
    size_bytes: int = 0
    scans: int | None = None
    oid: int = 0
    attnums: list[int] = field(default_factory=list)  # 0 for an expression key
    opclasses: list[int] = field(default_factory=list)
    collations: list[int] = field(default_factory=list)
    options: list[int] = field(default_factory=list)  # per key: DESC, NULLS FIRST bits
    replica_identity: bool = False
    constraints: list[str] = field(default_factory=list)  # constraints that use it
    keys_not_null: bool = False

    def __post_init__(self) -> None:
        self.descending = self.descending or [False] * len(self.keys)
        self.plain = self.plain or [True] * len(self.keys)

    @property
    def columns(self) -> list[str]:
        """Key columns then INCLUDE columns."""
        return [*self.keys, *self.include]

    @property
    def sort_keys(self) -> list[str]:
        """The keys as an index definition writes them: `created_at DESC`."""
        return [k + (" DESC" if d else "") for k, d in zip(self.keys, self.descending,
                                                           strict=True)]

    @property
    def identity(self) -> list[tuple[str, int, int, int]]:
        """What makes two keys the same key: column or expression, opclass, collation, order."""
        return list(zip(self.keys, self.opclasses, self.collations, self.options, strict=True))

    def serves(self, keys: tuple[str, ...], include: tuple[str, ...] = (),
               where: str | None = None) -> bool:
        """Whether this index already serves a B-tree on `keys` (written `col DESC` for a
        descending key) with `include` and predicate `where`: valid, a B-tree, the same
        leading keys in the same order with default operator classes and collations, every
        INCLUDE column held, and every row the other would hold (no predicate, or the same)."""
        width = len(keys)
        return (self.valid and self.method == "btree" and width <= len(self.keys)
                and tuple(self.sort_keys[:width]) == keys and all(self.plain[:width])
                and set(include) <= set(self.columns)
                and (self.predicate is None or sqltext.same_predicate(self.predicate, where)))

    def serves_foreign_key(self, fk: ForeignKey) -> bool:
        """Its leading keys are the foreign key's columns, in any order, on every row."""
        width = len(fk.attnums)
        leading = self.attnums[:min(width, len(self.keys))]
        return (self.valid and self.predicate is None and self.method in ("btree", "hash")
                and len(leading) == width and sorted(leading) == sorted(fk.attnums))

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


@dataclass
class Table:
    oid: int
    schema: str
    name: str
    rows: int = 0
    size_bytes: int = 0
    rls: bool = False
    force_rls: bool = False
    partitioned: bool = False
    inserts: int = 0  # writes since statistics began (pg_stat_user_tables)
    updates: int = 0
    hot_updates: int = 0
    deletes: int = 0
    modified_since_analyze: int = 0  # rows written since its last ANALYZE (pg_stat_user_tables)
    analyzed_at: datetime | None = None  # its last ANALYZE, by hand or by autovacuum
    readable_by: list[str] = field(default_factory=list)  # of the roles the loader was given
    columns: list[str] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    owner: str = ""
    mine: bool = True  # the connected role owns it or acts as its owner: it may change it

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def index_writes(self) -> int:
        """Writes that touched every index since statistics began (HOT updates touch none)."""
        return self.inserts + max(self.updates - self.hot_updates, 0) + self.deletes

    def served_by(self, keys: tuple[str, ...], include: tuple[str, ...] = (),
                  where: str | None = None, size_bytes: int = 0) -> Index | None:
        """The first index that already serves such an index (`Index.serves`), or None; given
        the index's `size_bytes`, a wider index it would be kept beside (`kept_beside`) does
        not count."""
        for index in self.indexes:
            if index.serves(keys, include, where) and not (
                    len(index.columns) > len(keys) + len(include)
                    and kept_beside(size_bytes, index.size_bytes)):
                return index
        return None


@dataclass
class Snapshot:
    """Whole schemas read at one moment, with how long their statistics have run."""

    tables: list[Table]
    now: datetime
    stats_since: datetime
    stats_were_reset: bool
    roles: list[str]  # of the roles asked about, those that exist

    @property
    def stats_days(self) -> float:
        return max((self.now - self.stats_since).total_seconds(), 0.0) / 86400

    @property
    def stats_window(self) -> str:
        origin = "the last statistics reset" if self.stats_were_reset else "the server start"
        since = self.stats_since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"{span(self.stats_days)} of statistics (since {origin}, {since})"


# --- what differs between PostgreSQL versions --------------------------------------------------
#
# hotdata supports PostgreSQL 13 and newer. The catalog differences it meets are chosen here,
# by the connected server's version (`conn.info.server_version`, e.g. 150018 or 180006), and
# nowhere else. (Plans need none: hotdata asks for BUFFERS, which 18 adds by default to
# ANALYZE, and reads row counts as floats, which 18 prints with decimals.)

def pgss_io_ms(version: int) -> sql.Composable:
    """pg_stat_statements' milliseconds spent reading and writing blocks (when track_io_timing
    is on), summed over a group of its rows: `blk_read_time` and `blk_write_time` until 16 (and
    the temporary blocks' since 15), renamed `shared_blk_read_time`… in 17 beside `local_` ones."""
    if version >= 170000:
        columns = [f"{kind}_blk_{way}_time" for kind in ("shared", "local", "temp")
                   for way in ("read", "write")]
    else:
        columns = ["blk_read_time", "blk_write_time",
                   *(["temp_blk_read_time", "temp_blk_write_time"] if version >= 150000 else [])]
    return sql.SQL(" + ").join(sql.SQL("sum({})").format(sql.Identifier(column))
                               for column in columns)


def pgss_reset(version: int, schema: str) -> sql.Composable:
    """When pg_stat_statements was last reset, as a scalar expression: its view
    pg_stat_statements_info came in 14; before, NULL (only a restart shows then)."""
    if version < 140000:
        return sql.SQL("NULL::timestamptz")
    return sql.SQL("(SELECT stats_reset FROM {})").format(
        sql.Identifier(schema, "pg_stat_statements_info"))


# --- the queries --------------------------------------------------------------------------------

RESOLVE_SQL = TAG + """
SELECT r.key, c.oid::bigint AS oid, c.relkind::text AS kind
FROM unnest(%(keys)s::text[], %(schemas)s::text[], %(names)s::text[]) AS r(key, s, n)
JOIN pg_class c ON c.oid = to_regclass(
       CASE WHEN r.s IS NULL THEN quote_ident(r.n)
            ELSE quote_ident(r.s) || '.' || quote_ident(r.n) END)
"""
TABLE_KINDS = ("r", "p", "m")

# The tables behind each named view, through views of views (a view's rewrite rule depends on
# every relation its query reads).
BEHIND_VIEWS_SQL = TAG + """
WITH RECURSIVE behind(key, oid) AS (
  SELECT key, oid::oid FROM unnest(%s::text[], %s::bigint[]) AS v(key, oid)
  UNION
  SELECT b.key, d.refobjid FROM behind b
  JOIN pg_rewrite w ON w.ev_class = b.oid
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
   AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> b.oid
)
SELECT DISTINCT b.key, n.nspname AS schema, c.relname AS name
FROM behind b JOIN pg_class c ON c.oid = b.oid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm')
ORDER BY 1, 2, 3
"""

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
       -- never analysed (-1): the live rows the statistics counted since
       (CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE coalesce(s.n_live_tup, 0) END)::bigint
         AS rows, pg_total_relation_size(c.oid) AS size_bytes,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls,
       c.relkind = 'p' AS partitioned,
       coalesce(s.n_tup_ins, 0) AS inserts, coalesce(s.n_tup_upd, 0) AS updates,
       coalesce(s.n_tup_hot_upd, 0) AS hot_updates, coalesce(s.n_tup_del, 0) AS deletes,
       coalesce(s.n_mod_since_analyze, 0) AS modified_since_analyze,
       greatest(s.last_analyze, s.last_autoanalyze) AS analyzed_at,
       array(SELECT r.rolname::text FROM pg_roles r
             WHERE r.rolname = ANY(%(roles)s::text[])
               AND has_schema_privilege(r.oid, n.oid, 'USAGE')
               AND has_any_column_privilege(r.oid, c.oid, 'SELECT')
             ORDER BY r.rolname) AS readable_by,
       array(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) AS columns,
       pg_get_userbyid(c.relowner) AS owner, pg_has_role(c.relowner, 'USAGE') AS mine
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE CASE WHEN %(oids)s::bigint[] IS NOT NULL THEN c.oid = ANY(%(oids)s::bigint[]::oid[])
      ELSE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname <> ALL(%(excluded)s::text[]) AND n.nspname !~ '^pg_'
           AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
           AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                           AND d.objid = c.oid AND d.deptype = 'e') END
ORDER BY n.nspname, c.relname
"""

INDEXES_SQL = TAG + """
SELECT i.indrelid::bigint AS table_oid, i.indexrelid::bigint AS oid, ic.relname AS name,
       am.amname AS method,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true)
             FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k) AS keys,
       array(SELECT pg_get_indexdef(i.indexrelid, k, true)
             FROM generate_series(i.indnkeyatts + 1, i.indnatts) AS k ORDER BY k) AS include,
       array(SELECT i.indoption[k - 1] & 1 = 1
             FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k) AS descending,
       array(SELECT coalesce(opc.opcdefault, false)
                    AND i.indcollation[k - 1] IN (0, coalesce(a.attcollation, 0))
             FROM generate_series(1, i.indnkeyatts) AS k
             LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[k - 1]
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid
                                     AND a.attnum = i.indkey[k - 1]
             ORDER BY k) AS plain,
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

POLICIES_SQL = TAG + """
SELECT p.polrelid::bigint AS table_oid, p.polname AS name,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                     WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
       CASE WHEN p.polroles = '{0}' THEN ARRAY['public']
            ELSE array(SELECT r.rolname::text FROM pg_roles r WHERE r.oid = ANY(p.polroles)
                       ORDER BY r.rolname) END AS roles,
       p.polpermissive AS permissive, pg_get_expr(p.polqual, p.polrelid) AS qual,
       pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
FROM pg_policy p
WHERE p.polrelid = ANY(%s::bigint[]::oid[])
ORDER BY p.polname
"""


# --- the loaders --------------------------------------------------------------------------------


async def load(conn: psycopg.AsyncConnection[dict[str, Any]], oids: list[int] | None,
               schemas: list[str] | None = None,
               roles: list[str] | tuple[str, ...] = ()) -> dict[int, Table]:
    """oid → Table with its columns, indexes (with usage), foreign keys and policies, and which
    of `roles` may read it: the tables `oids` names, or (None) the application's tables in
    `schemas` (every schema but the system's and hotdata's; no extension's or partition's)."""
    if oids is not None and not oids:
        return {}
    cur = await conn.execute(TABLES_SQL, {"oids": oids, "schemas": schemas, "roles": list(roles),
                                          "excluded": sorted(sqltext.CATALOG_SCHEMAS)})
    tables = {row["oid"]: Table(**row) for row in await cur.fetchall()}
    if not tables:
        return {}
    cur = await conn.execute(INDEXES_SQL, (list(tables),))
    for row in await cur.fetchall():
        table = tables[row.pop("table_oid")]
        fields: dict[str, Any] = {key: list(value) if isinstance(value, list) else value
                                  for key, value in row.items()}
        table.indexes.append(Index(**fields))
    cur = await conn.execute(FOREIGN_KEYS_SQL, (list(tables),))
    for row in await cur.fetchall():
        tables[row.pop("table_oid")].foreign_keys.append(ForeignKey(**row))
    cur = await conn.execute(POLICIES_SQL, (list(tables),))
    for row in await cur.fetchall():
        tables[row.pop("table_oid")].policies.append(Policy(**row))
    return tables


async def tables(conn: psycopg.AsyncConnection[dict[str, Any]],
                 relations: list[sqltext.Relation]) -> dict[str, Table]:
    """The relations a workload names: key as written (`name` or `schema.name`) → Table."""
    keys = {key: oid for key, (oid, kind) in (await resolve(conn, relations)).items()
            if kind in TABLE_KINDS}
    if not keys:
        return {}
    loaded = await load(conn, sorted(set(keys.values())))
    return {key: loaded[oid] for key, oid in keys.items() if oid in loaded}


async def resolve(conn: psycopg.AsyncConnection[dict[str, Any]],
                  relations: list[sqltext.Relation]) -> dict[str, tuple[int, str]]:
    """Key as written → (oid, relkind) of the relations that exist, found as the statement's
    own search_path finds them."""
    unique = {r.key: r for r in relations}
    if not unique:
        return {}
    cur = await conn.execute(RESOLVE_SQL, {
        "keys": list(unique), "schemas": [r.schema for r in unique.values()],
        "names": [r.name for r in unique.values()]})
    return {row["key"]: (row["oid"], row["kind"]) for row in await cur.fetchall()}


async def behind_views(conn: psycopg.AsyncConnection[dict[str, Any]],
                       relations: list[sqltext.Relation]) -> dict[str, list[sqltext.Relation]]:
    """The views among `relations`: key as written → the tables their queries read (what
    PostgreSQL scans when it rewrites a statement through them)."""
    views = {key: oid for key, (oid, kind) in (await resolve(conn, relations)).items()
             if kind == "v"}
    if not views:
        return {}
    cur = await conn.execute(BEHIND_VIEWS_SQL, (list(views), list(views.values())))
    found: dict[str, list[sqltext.Relation]] = {}
    for row in await cur.fetchall():
        found.setdefault(row["key"], []).append(sqltext.Relation(row["schema"], row["name"],
                                                                 None))
    return found


async def snapshot(conn: psycopg.AsyncConnection[dict[str, Any]], schemas: list[str] | None = None,
                   roles: list[str] | tuple[str, ...] = ()) -> Snapshot:
    """The tables of `schemas` (default: every schema but the system's and hotdata's, and no
    extension's or partition's), read at one moment; which of `roles` exist and may read each."""
    cur = await conn.execute(CONTEXT_SQL, {"roles": list(roles)})
    context = await cur.fetchone()
    assert context is not None
    loaded = await load(conn, None, schemas, roles)
    return Snapshot(list(loaded.values()), context["now"], context["stats_since"],
                    context["stats_were_reset"], list(context["roles"]))
