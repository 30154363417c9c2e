"""Review a schema plan (a migration not written yet) on a scratch copy of the live schema.

Any workspace member may send a plan, so it runs as nobody (SECURITY.md):

1. pglast reads the plan; anything that is not a schema definition (data changes, DROP,
   TRUNCATE, transaction control…), a function in a language other than SQL or PL/pgSQL, and an
   extension the target lacks and HOTDATA_REVIEW_EXTENSIONS does not list (or an unsafe one,
   whatever the lists say) are refused before anything runs.
2. A sandbox (`bot.schema.sandbox`): a throwaway database and login role on the scratch server
   (HOTDATA_DRILL_DATABASE_URL's, or the target's), holding `pg_dump --schema-only` of the
   target, owned by that role; always dropped.
3. The plan runs there, logged in as the throwaway role, statement by statement inside one
   transaction that is rolled back, each statement with a deadline; the catalog is read inside
   it, so the review sees the plan's tables as PostgreSQL built them.
4. What the plan adds to the ERD, the lints on its tables, squawk's findings, proposed first
   indexes and RLS policies; migration stubs and a spec written to --out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, enums, parser
from pglast.stream import RawStream
from psycopg import sql

from bot import squawk
from bot.advisor.model import Candidate, quote
from bot.analysis.model import Finding
from bot.db import connect
from bot.dsn import redact_dsn, scrub
from bot.errors import UserError
from bot.schema import document, sandbox
from bot.settings import UNSAFE_EXTENSIONS, Settings

# Lints a review reports on the plan's tables, in this order.
KINDS = ("rls_disabled", "rls_per_row_call", "multiple_permissive_policies", "unindexed_fk",
         "no_primary_key", "vector_without_index", "timestamp_without_time_zone")
LINT_KINDS = set(KINDS[:5])
VECTOR_TYPES = {"vector", "halfvec", "sparsevec"}
VECTOR_METHODS = {"hnsw", "ivfflat"}
USER_TABLES = {"profiles", "users"}  # a user_id referencing these gets an owner policy
SETTINGS_ALLOWED = {"lock_timeout", "statement_timeout", "search_path", "check_function_bodies"}
SETTINGS_NOT_RUN = {"lock_timeout", "statement_timeout"}  # the review keeps its own timeouts
LANGUAGES = {"sql", "plpgsql"}
# Beyond the throwaway role's own statement_timeout, which a function can catch or lift.
STATEMENT_DEADLINE_S = 10.0
PLAN_DEADLINE_S = 60.0
ERROR_CHARS = 300
DEFINITIONS = (ast.CreateStmt, ast.IndexStmt, ast.CreatePolicyStmt, ast.AlterPolicyStmt,
               ast.AlterTableStmt, ast.GrantStmt, ast.CommentStmt, ast.CreateExtensionStmt,
               ast.CreateEnumStmt, ast.CompositeTypeStmt, ast.CreateDomainStmt,
               ast.CreateSeqStmt, ast.ViewStmt, ast.CreateFunctionStmt, ast.CreateTrigStmt,
               ast.CreateSchemaStmt, ast.VariableSetStmt)
DROPPING = {enums.AlterTableType.AT_DropColumn, enums.AlterTableType.AT_DropConstraint}
NAMES = {"DeleteStmt": "DELETE", "InsertStmt": "INSERT", "UpdateStmt": "UPDATE",
         "MergeStmt": "MERGE", "TruncateStmt": "TRUNCATE", "SelectStmt": "SELECT",
         "TransactionStmt": "transaction control", "CopyStmt": "COPY", "DoStmt": "DO",
         "CallStmt": "CALL"}


class PlanError(UserError):
    """The plan cannot be reviewed; the message says where (line) and why."""


class PlanRefused(PlanError):
    """The plan holds a statement that is not a schema definition; nothing ran."""


@dataclass
class PlanStatement:
    node: ast.Node
    text: str  # as written in the plan (CONCURRENTLY dropped: it cannot run in a transaction)
    line: int
    table: str | None  # the table it defines or changes, as written, or None
    runs: bool = True  # False: hotdata does it itself (CREATE EXTENSION) or keeps its own (SET)


@dataclass
class Review:
    plan: str
    database: str
    status: str = "ok"  # ok | refused | failed
    error: str | None = None
    new_tables: list[document.TableDoc] = field(default_factory=list)
    new_foreign_keys: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    squawk: list[dict[str, str]] = field(default_factory=list)
    proposals: dict[str, list[str]] = field(default_factory=dict)  # table → SQL
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    erd: str = ""  # Mermaid source of the plan's tables
    statements: list[PlanStatement] = field(default_factory=list)  # when it parsed


# --- reading the plan ---------------------------------------------------------------------------


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, max(offset, 0)) + 1


def _range_var_name(node: ast.RangeVar | None) -> str | None:
    if node is None:
        return None
    return f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname


def _target_table(node: ast.Node) -> str | None:
    if isinstance(node, ast.CreateStmt | ast.IndexStmt | ast.AlterTableStmt
                  | ast.CreateTrigStmt):
        return _range_var_name(node.relation)
    if isinstance(node, ast.CreatePolicyStmt | ast.AlterPolicyStmt):
        return _range_var_name(node.table)
    if (isinstance(node, ast.GrantStmt) and node.objtype == enums.ObjectType.OBJECT_TABLE
            and node.targtype == enums.GrantTargetType.ACL_TARGET_OBJECT and node.objects
            and len(node.objects) == 1 and isinstance(node.objects[0], ast.RangeVar)):
        return _range_var_name(node.objects[0])
    return None


def _refusal(node: ast.Node) -> str | None:
    """Why `node` is not a schema definition hotdata reviews, or None."""
    kind = type(node).__name__
    if isinstance(node, ast.DropStmt) and node.removeType is not None:
        what = enums.ObjectType(node.removeType).name.removeprefix("OBJECT_").replace("_", " ")
        return f"DROP {what} removes objects"
    if not isinstance(node, DEFINITIONS):
        return f"{NAMES.get(kind, kind.removesuffix('Stmt'))} is not a schema definition"
    if isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if isinstance(cmd, ast.AlterTableCmd) and cmd.subtype in DROPPING:
                return "ALTER TABLE … DROP removes a column or constraint"
    if isinstance(node, ast.VariableSetStmt) and (node.name or "") not in SETTINGS_ALLOWED:
        return f"SET {node.name or ''} is not a schema definition"
    if isinstance(node, ast.CreateFunctionStmt):
        language = next((_word(o.arg).lower() for o in node.options or ()
                         if isinstance(o, ast.DefElem) and o.defname == "language"), "sql")
        if language not in LANGUAGES:
            return (f"a function in LANGUAGE {language}: hotdata reviews functions in SQL and "
                    "PL/pgSQL only")
    if isinstance(node, ast.CreateExtensionStmt) and node.extname in UNSAFE_EXTENSIONS:
        return (f"CREATE EXTENSION {node.extname}: it reaches other databases or the server's "
                "files, and a review never creates it")
    if isinstance(node, ast.CreateSchemaStmt):
        return next((why for element in node.schemaElts or () if (why := _refusal(element))),
                    None)
    return None


def _word(arg: object) -> str:
    """An option's word (LANGUAGE plpgsql, SCHEMA s): the grammar makes it a String."""
    assert isinstance(arg, ast.String)
    return str(arg.sval)


def _runs(node: ast.Node) -> bool:
    if isinstance(node, ast.CreateExtensionStmt):
        return False
    return not (isinstance(node, ast.VariableSetStmt) and node.name in SETTINGS_NOT_RUN)


def extensions_of(statements: list[PlanStatement]) -> list[tuple[str, str | None]]:
    """The plan's CREATE EXTENSION statements as (name, schema): hotdata creates them."""
    found: list[tuple[str, str | None]] = []
    for s in statements:
        if isinstance(s.node, ast.CreateExtensionStmt) and s.node.extname is not None:
            schema = next((_word(o.arg) for o in s.node.options or ()
                           if isinstance(o, ast.DefElem) and o.defname == "schema"), None)
            found.append((s.node.extname, schema))
    return found


def refuse_extensions(statements: list[PlanStatement], allowed: set[str]) -> None:
    """PlanRefused for a CREATE EXTENSION of one the target lacks and the setting omits."""
    for s in statements:
        if isinstance(s.node, ast.CreateExtensionStmt) and s.node.extname not in allowed:
            raise PlanRefused(
                f"line {s.line}: CREATE EXTENSION {s.node.extname}: the target does not have "
                "it and HOTDATA_REVIEW_EXTENSIONS does not list it. Nothing was run.")


def parse_plan(text: str) -> list[PlanStatement]:
    """The plan's statements; PlanError (syntax, with its line) or PlanRefused (which statement,
    line) before anything runs."""
    try:
        raws = parser.parse_sql(text)
    except parser.ParseError as error:
        message, offset = error.args[0], (error.args[1] if len(error.args) > 1 else 0)
        raise PlanError(f"line {_line(text, offset - 1)}: {message}") from None
    statements = []
    for raw in raws:
        start = raw.stmt_location or 0
        length = raw.stmt_len or len(text) - start
        written = text[start:start + length]
        line = _line(text, start + len(written) - len(written.lstrip()))
        node = raw.stmt
        assert node is not None  # a parsed statement always holds its node
        reason = _refusal(node)
        if reason:
            raise PlanRefused(f"line {line}: {reason}; hotdata reviews schema definitions only "
                              "(CREATE TABLE/INDEX/POLICY, ALTER TABLE, GRANT…). Nothing was run.")
        if isinstance(node, ast.IndexStmt) and node.concurrent:
            node.concurrent = False
            written = RawStream()(node)
        statements.append(PlanStatement(node, written.strip(), line, _target_table(node),
                                        _runs(node)))
    if not statements:
        raise PlanError("line 1: the plan holds no statement")
    return statements


def _type_name(type_name: ast.TypeName | None) -> str:
    if type_name is None or not type_name.names:
        return ""
    name: str = type_name.names[-1].sval
    return name


def vector_findings(statements: list[PlanStatement]) -> list[Finding]:
    """Vector columns (pgvector's types, by name, so pgvector may be absent) that no HNSW or
    IVFFlat index of the plan serves."""
    indexed = set()
    for s in statements:
        node = s.node
        if isinstance(node, ast.IndexStmt) and (node.accessMethod or "") in VECTOR_METHODS:
            for elem in node.indexParams or ():
                if isinstance(elem, ast.IndexElem) and elem.name:
                    indexed.add((_range_var_name(node.relation), elem.name))
    found = []
    for s in statements:
        if not isinstance(s.node, ast.CreateStmt):
            continue
        relation = s.node.relation
        assert relation is not None  # CREATE TABLE always names its table
        table = _range_var_name(relation)
        for col in s.node.tableElts or ():
            if (isinstance(col, ast.ColumnDef) and col.colname is not None
                    and _type_name(col.typeName) in VECTOR_TYPES
                    and (table, col.colname) not in indexed):
                name = relation.relname
                found.append(Finding(
                    "vector_without_index", table,
                    f"line {s.line}: {table}.{col.colname} is a "
                    f"{_type_name(col.typeName)} column without an HNSW or IVFFlat index: "
                    "every similarity search reads and compares every row",
                    f"CREATE INDEX {quote(f'idx_{name}_{col.colname}_hnsw')} ON {table} "
                    f"USING hnsw ({quote(col.colname)} vector_cosine_ops);"))
    return found


def _timestamp_findings(table: document.TableDoc) -> list[Finding]:
    return [Finding(
        "timestamp_without_time_zone", table.qualified,
        f"{table.qualified}.{c.name} is timestamp without time zone: the same instant reads "
        "differently from sessions in other time zones, and daylight saving makes values "
        "ambiguous",
        f"ALTER TABLE {quote(table.facts.schema)}.{quote(table.name)} ALTER COLUMN "
        f"{quote(c.name)} TYPE timestamptz;  -- in the plan: declare it timestamptz")
        for c in table.columns if c.type.startswith("timestamp without time zone")]


# --- proposals ----------------------------------------------------------------------------------


def proposals(table: document.TableDoc, app_role: str) -> list[str]:
    """First indexes (one per unindexed foreign key) and, for a table owned through user_id, RLS
    and an owner policy that evaluates auth.uid() once per query."""
    facts = table.facts
    out = []
    for fk in facts.foreign_keys:
        if not any(index.serves_foreign_key(fk) for index in facts.indexes):
            out.append(Candidate(facts.schema, facts.name, tuple(fk.columns))
                       .create_sql(named=True) + ";")
    owner = next((fk for fk in facts.foreign_keys if fk.columns == ["user_id"]
                  and fk.referenced.split(".")[-1] in USER_TABLES), None)
    if owner is not None and not facts.policies:
        target = sql.Identifier(facts.schema, facts.name)
        if not facts.rls:
            out.append(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY;").format(target)
                       .as_string(None))
        out.append(sql.SQL("CREATE POLICY {} ON {} FOR SELECT TO {} "
                           "USING (user_id = (select auth.uid()));").format(
            sql.Identifier(f"{facts.name}_select_own"), target, sql.Identifier(app_role))
            .as_string(None))
    return out


# --- the sandbox ---------------------------------------------------------------------------------


def _error_text(error: psycopg.Error, statement: PlanStatement, secrets: list[str]) -> str:
    """PostgreSQL's one-line message with the statement's line, cut: nothing else the server
    says (detail, context, hints) is shown."""
    line = statement.line
    position = error.diag.statement_position
    if position:
        line += statement.text.count("\n", 0, int(position) - 1)
    message = " ".join((error.diag.message_primary or str(error)).split())
    if len(message) > ERROR_CHARS:
        message = message[:ERROR_CHARS] + "…"
    return scrub(f"line {line}: {message}", secrets)


async def _apply_and_read(settings: Settings, box: sandbox.Sandbox,
                          statements: list[PlanStatement], review: Review) -> None:
    async with connect(settings, "review", dsn=box.dsn) as conn:
        try:
            await _apply(conn, box, statements, settings, review)
        except psycopg.OperationalError:  # the session was terminated at its deadline
            if review.status == "ok":
                raise


async def _apply(conn: psycopg.AsyncConnection[dict[str, Any]], box: sandbox.Sandbox,
                 statements: list[PlanStatement], settings: Settings, review: Review) -> None:
    app_role = settings.app_role
    _, before = await document.read(conn, None, app_role)
    existing = {t.qualified for t in before}
    existing_fks = {(t.qualified, fk.name) for t in before for fk in t.facts.foreign_keys}
    started = time.monotonic()
    async with conn.transaction(force_rollback=True):
        for statement in (s for s in statements if s.runs):
            left = min(STATEMENT_DEADLINE_S, PLAN_DEADLINE_S - (time.monotonic() - started))
            async with sandbox.deadline(settings, box, max(left, 0.1)) as timer:
                try:
                    async with conn.transaction():  # a savepoint: the catalog stays readable
                        await conn.execute(statement.text)
                except psycopg.Error as error:
                    review.status = "failed"
                    review.error = (
                        f"line {statement.line}: the statement did not finish within "
                        f"{timer.seconds:.0f} s" if timer.expired
                        else _error_text(error, statement, settings.secrets()))
                    return
        _, after = await document.read(conn, None, app_role)
    review.new_tables = [t for t in after if t.qualified not in existing]
    review.new_foreign_keys = [
        {"table": t.qualified, "name": fk.name, "columns": fk.columns,
         "references": fk.referenced, "referenced_columns": fk.referenced_columns}
        for t in after for fk in t.facts.foreign_keys if (t.qualified, fk.name) not in existing_fks]
    for table in review.new_tables:
        review.findings += [f for f in table.lints if f.kind in LINT_KINDS]
        review.findings += _timestamp_findings(table)


async def review(settings: Settings, plan_text: str, *, name: str = "plan",
                 requested_by: str | None = None) -> Review:
    """`hotdata schema review PLAN.sql`: never runs anything on the target but catalog reads
    and pg_dump; the plan runs in a sandbox as a throwaway role."""
    target = settings.database_url
    result = Review(name, redact_dsn(target))
    try:
        statements = parse_plan(plan_text)
        async with connect(settings, "analysis") as conn:
            facts = await sandbox.target_facts(conn)
        refuse_extensions(statements, facts.extension_names | set(settings.review_extensions))
    except PlanError as error:
        result.status = "refused" if isinstance(error, PlanRefused) else "failed"
        result.error = str(error)
        return result
    vectors = vector_findings(statements)
    try:
        async with sandbox.opened(settings, target, facts, extensions_of(statements),
                                  requested_by) as box:
            result.notes += box.notes
            await _apply_and_read(settings, box, statements, result)
    except sandbox.SandboxError as error:
        result.status, result.error = "failed", str(error)
    result.findings += vectors
    result.findings.sort(key=lambda f: KINDS.index(f.kind))
    result.squawk = await squawk.lint(plan_text)
    if result.status != "ok":
        return result
    role = settings.app_role or "authenticated"
    result.proposals = {t.qualified: p for t in result.new_tables if (p := proposals(t, role))}
    result.erd = document.mermaid("public", result.new_tables)
    result.statements = statements
    return result


# --- files --------------------------------------------------------------------------------------


def _bare(name: str | None) -> str | None:
    return name.split(".")[-1] if name else None


def _per_table(statement: PlanStatement, tables: set[str | None]) -> list[PlanStatement]:
    """A GRANT on several of the plan's tables as one GRANT per table, so each stub has its own."""
    node = statement.node
    if not (isinstance(node, ast.GrantStmt) and statement.table is None
            and node.objtype == enums.ObjectType.OBJECT_TABLE and node.objects
            and all(isinstance(o, ast.RangeVar) and o.relname in tables for o in node.objects)):
        return [statement]
    objects, parts = node.objects, []
    try:
        for item in objects:
            node.objects = (item,)
            parts.append(PlanStatement(node, RawStream()(node), statement.line,
                                       _range_var_name(item)))
    finally:
        node.objects = objects
    return parts


def stubs(review: Review) -> list[tuple[str, str]]:
    """(table, SQL) per new table in plan order: the plan's statements for it, then the
    proposed indexes and policies; statements tied to no table open the first stub."""
    statements = review.statements
    tables = {_bare(t.qualified): t for t in review.new_tables}
    order = [_bare(s.table) for s in statements
             if isinstance(s.node, ast.CreateStmt) and _bare(s.table) in tables]
    statements = [part for s in statements for part in _per_table(s, set(tables))]
    loose = [s for s in statements if _bare(s.table) not in tables]
    out = []
    for n, name in enumerate(order):
        table = tables[name]
        assert name is not None
        own = [s for s in statements if _bare(s.table) == name]
        lines = [f"-- {name}: generated by hotdata schema review of {review.plan}",
                 "-- Structure only: no data. Apply in file-name order.", ""]
        if n == 0 and loose:
            lines += [s.text.rstrip(";") + ";" for s in loose] + [""]
        lines += [s.text.rstrip(";") + ";" for s in own]
        proposed = review.proposals.get(table.qualified)
        if proposed:
            lines += ["", "-- Proposed by hotdata: first indexes and row level security"]
            lines += proposed
        out.append((name, "\n".join(lines) + "\n"))
    return out
