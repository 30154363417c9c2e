"""Document a live schema: tables, columns, keys, indexes with sizes and usage, row level security
with each policy in plain words, grants to the application roles, the lints that apply, and an
ERD as Mermaid source and as a PNG drawn by Graphviz `dot`.

The catalog is read by `bot.catalog.snapshot` plus two batched queries (columns and keys,
grants); everything after that is a pure function of the result.
"""

from __future__ import annotations

import html
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg

from bot import catalog, sqltext, tools
from bot.advisor import lint
from bot.analysis.findings import per_row_calls
from bot.analysis.model import Finding
from bot.catalog import TAG, Policy
from bot.db import connect
from bot.dsn import redact_dsn
from bot.settings import Settings

COLUMNS_SQL = TAG + """
SELECT c.oid::bigint AS table_oid, c.relforcerowsecurity AS force_rls,
       a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS "default",
       array(SELECT co.contype::text FROM pg_constraint co
             WHERE co.conrelid = c.oid AND co.contype IN ('p', 'u')
               AND a.attnum = ANY(co.conkey) ORDER BY co.contype) AS keys
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.oid = ANY(%s::bigint[]::oid[])
ORDER BY c.oid, a.attnum
"""

KEYS_SQL = TAG + """
SELECT co.conrelid::bigint AS table_oid, co.conname AS name, co.contype::text AS type,
       array(SELECT a.attname::text FROM unnest(co.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord) AS columns
FROM pg_constraint co
WHERE co.contype IN ('p', 'u') AND co.conrelid = ANY(%s::bigint[]::oid[])
ORDER BY co.conrelid, co.contype, co.conname
"""

GRANTS_SQL = TAG + """
SELECT c.oid::bigint AS table_oid, coalesce(r.rolname, 'PUBLIC') AS role,
       array_agg(a.privilege_type::text ORDER BY a.privilege_type) AS privileges
FROM pg_class c
CROSS JOIN LATERAL aclexplode(c.relacl) AS a
LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE c.oid = ANY(%s::bigint[]::oid[]) AND (a.grantee = 0 OR r.rolname = ANY(%s::text[]))
GROUP BY 1, 2
ORDER BY 1, 2
"""

COMMAND_WORDS = {"ALL": "SELECT, INSERT, UPDATE and DELETE", "SELECT": "SELECT",
                 "INSERT": "INSERT", "UPDATE": "UPDATE", "DELETE": "DELETE"}


@dataclass
class Column:
    name: str
    type: str
    not_null: bool
    default: str | None
    keys: list[str]  # "p" primary key, "u" unique

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "not_null": self.not_null,
                "default": self.default, "primary_key": "p" in self.keys,
                "unique": "u" in self.keys}


@dataclass
class TableDoc:
    facts: catalog.Table
    force_rls: bool = False
    columns: list[Column] = field(default_factory=list)
    # {"name", "type": primary key|unique, …}
    keys: list[dict[str, Any]] = field(default_factory=list)
    grants: dict[str, list[str]] = field(default_factory=dict)
    lints: list[Finding] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def qualified(self) -> str:
        return self.facts.qualified

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass
class SchemaDoc:
    database: str
    schema: str
    generated_at: str
    tables: list[TableDoc] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> TableDoc | None:
        return next((t for t in self.tables if name in (t.name, t.qualified)), None)


# --- reading ----------------------------------------------------------------------------------


async def read(conn: psycopg.AsyncConnection[dict[str, Any]], schemas: list[str] | None,
               app_role: str | None) -> tuple[catalog.Snapshot, list[TableDoc]]:
    """The snapshot lint reads and one TableDoc per table, with its lints."""
    snapshot = await catalog.snapshot(conn, schemas, lint.app_roles(app_role))
    docs = {t.oid: TableDoc(t) for t in snapshot.tables}
    if docs:
        cur = await conn.execute(COLUMNS_SQL, (list(docs),))
        for row in await cur.fetchall():
            doc = docs[row["table_oid"]]
            doc.force_rls = row["force_rls"]
            doc.columns.append(Column(row["name"], row["type"], row["not_null"], row["default"],
                                      list(row["keys"])))
        cur = await conn.execute(KEYS_SQL, (list(docs),))
        for row in await cur.fetchall():
            docs[row["table_oid"]].keys.append({
                "name": row["name"], "type": "primary key" if row["type"] == "p" else "unique",
                "columns": list(row["columns"])})
        cur = await conn.execute(GRANTS_SQL, (list(docs), lint.app_roles(app_role)))
        for row in await cur.fetchall():
            docs[row["table_oid"]].grants[row["role"]] = list(row["privileges"])
    by_name = {d.qualified: d for d in docs.values()}
    for finding in lint.check(snapshot):
        if finding.table in by_name:
            by_name[finding.table].lints.append(finding)
    return snapshot, list(docs.values())


async def run(settings: Settings, schema: str = "public") -> SchemaDoc:
    """`hotdata schema` and `/hotdata schema`: read over the read-only analysis connection."""
    target = settings.database_url
    async with connect(settings, "analysis") as conn:
        snapshot, tables = await read(conn, [schema], settings.app_role)
    doc = SchemaDoc(redact_dsn(target), schema,
                    snapshot.now.astimezone(UTC).isoformat(timespec="seconds"), tables)
    if not tables:
        doc.notes.append(f"schema {schema} has no tables (or does not exist)")
    elif not snapshot.roles:
        doc.notes.append("no application role exists (anon, authenticated or HOTDATA_APP_ROLE): "
                         "tables readable without row level security were not checked")
    return doc


# --- policies in plain words ------------------------------------------------------------------


def expression(text: str | None) -> str:
    """A policy expression as pglast prints it (no redundant outer parentheses)."""
    return sqltext.printed_expression(text) if text else "true"


def describe_policy(policy: Policy) -> str:
    """`authenticated may SELECT rows where user_id = auth.uid()`, and what else matters."""
    roles = [r for r in policy.roles if r != "public"]
    who = " and ".join(roles) if roles else "every role"
    verbs = COMMAND_WORDS.get(policy.command, policy.command)
    only = "" if policy.permissive else "only "
    if policy.command == "INSERT":
        text = f"{who} may {verbs} {only}rows that satisfy {expression(policy.with_check)}"
    else:
        rows = (f"rows where {expression(policy.qual)}" if policy.qual else "every row")
        text = f"{who} may {verbs} {only}{rows}"
        if policy.with_check and expression(policy.with_check) != expression(policy.qual):
            text += f"; new rows must satisfy {expression(policy.with_check)}"
    if not policy.permissive:
        text += " (RESTRICTIVE: combined with AND with the other policies)"
    calls = sorted({c for e in (policy.qual, policy.with_check) for c in per_row_calls(e)})
    if calls:
        text += f" — calls {', '.join(calls)} once per row"
    return f"{policy.name}: {text}"


def rls_summary(table: TableDoc) -> str:
    facts = table.facts
    if not facts.rls:
        readers = ", ".join(facts.readable_by)
        return ("row level security disabled" + (f": {readers} can read every row" if readers
                                                 else ""))
    text = "row level security enabled" + (", forced (the owner too)" if table.force_rls
                                           else "")
    if not facts.policies:
        text += "; no policy: the application roles see no rows"
    return text


# --- ERD ----------------------------------------------------------------------------------------


def _entity(doc_schema: str, qualified: str) -> str:
    schema, _, name = qualified.partition(".")
    return re.sub(r"\W", "_", name if schema == doc_schema else f"{schema}_{name}")


def _mermaid_type(type_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\[\]]", "_", type_name.replace(" ", "_")).strip("_") or "unknown"


def _key_marks(table: TableDoc, column: Column) -> list[str]:
    marks = []
    if "p" in column.keys:
        marks.append("PK")
    if any(column.name in fk.columns for fk in table.facts.foreign_keys):
        marks.append("FK")
    if "u" in column.keys and "p" not in column.keys:
        marks.append("UK")
    return marks


def edges(tables: list[TableDoc]) -> list[tuple[TableDoc, catalog.ForeignKey]]:
    return [(t, fk) for t in tables for fk in t.facts.foreign_keys]


def mermaid(schema: str, tables: list[TableDoc]) -> str:
    """Mermaid `erDiagram` source: every table with its columns, every foreign key."""
    lines = ["erDiagram"]  # tables outside `tables` appear through their relationships
    for table in tables:
        lines.append(f"    {_entity(schema, table.qualified)} {{")
        for column in table.columns:
            marks = ",".join(_key_marks(table, column))
            lines.append(f"        {_mermaid_type(column.type)} {column.name}"
                         + (f" {marks}" if marks else ""))
        lines.append("    }")
    for table, fk in edges(tables):
        required = all(c is not None and c.not_null
                       for c in (table.column(name) for name in fk.columns))
        parent = "||" if required else "o|"
        lines.append(f"    {_entity(schema, fk.referenced)} {parent}--o{{ "
                     f"{_entity(schema, table.qualified)} : \"{', '.join(fk.columns)}\"")
    return "\n".join(lines) + "\n"


def dot(schema: str, tables: list[TableDoc]) -> str:
    """Graphviz source of the same ERD: one HTML-like table per table, an edge per foreign key."""
    lines = ["digraph erd {", "  rankdir=LR;", '  graph [fontname="Helvetica"];',
             '  node [shape=plaintext fontname="Helvetica" fontsize=10];',
             '  edge [fontname="Helvetica" fontsize=9 arrowhead=normal];']
    known = {t.qualified for t in tables}
    for table in tables:
        rows = [f'<tr><td bgcolor="#d9e6f2"><b>{html.escape(table.qualified)}</b></td></tr>']
        for column in table.columns:
            marks = " ".join(_key_marks(table, column))
            rows.append(f'<tr><td align="left">{html.escape(column.name)} '
                        f'<font color="#555555">{html.escape(column.type)}</font>'
                        f'{" <b>" + marks + "</b>" if marks else ""}</td></tr>')
        label = '<table border="0" cellborder="1" cellspacing="0">' + "".join(rows) + "</table>"
        lines.append(f'  "{table.qualified}" [label=<{label}>];')
    for outside in sorted({fk.referenced for _, fk in edges(tables)} - known):
        lines.append(f'  "{outside}" [shape=box style=dashed];')
    for table, fk in edges(tables):
        lines.append(f'  "{table.qualified}" -> "{fk.referenced}" '
                     f'[label="{html.escape(", ".join(fk.columns))}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


async def png(schema: str, tables: list[TableDoc]) -> bytes:
    """The ERD drawn by Graphviz `dot` (Debian package graphviz)."""
    with tempfile.TemporaryDirectory(prefix="hotdata-erd-") as directory:
        source = Path(directory) / "erd.dot"
        out = Path(directory) / "erd.png"
        source.write_text(dot(schema, tables))
        result = await tools.run("dot", "-Tpng", "-o", str(out), str(source), timeout=60)
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"dot failed: {result.stderr.strip()[:300]}")
        return out.read_bytes()
