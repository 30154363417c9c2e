"""What hotdata learns from a statement's text, always through pglast (PostgreSQL's own parser)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast, parser
from pglast.enums.parsenodes import A_Expr_Kind
from pglast.stream import RawStream

DML = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
CATALOG_SCHEMAS = {"pg_catalog", "information_schema", "hotdata", "pg_toast"}


class Unparseable(Exception):
    """pglast could not parse the statement; the message says why."""


@functools.lru_cache(maxsize=4096)
def parse_one(text: str) -> ast.RawStmt:
    """The one statement in `text` (cached: callers must not modify the tree; see
    parse_fresh)."""
    return parse_fresh(text)


def parse_fresh(text: str) -> ast.RawStmt:
    """The one statement in `text`, a new tree the caller may modify."""
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as error:
        raise Unparseable(str(error)) from None
    if len(statements) != 1:
        raise Unparseable(f"expected one statement, found {len(statements)}")
    return statements[0]


def fingerprint(text: str) -> str:
    """Same for a query in literal, `$n` and pg_stat_statements form."""
    try:
        return str(parser.fingerprint(text))
    except pglast.parser.ParseError as error:
        raise Unparseable(str(error)) from None


def identity(text: str) -> str:
    """What makes two texts the same statement: the fingerprint and the relations named.

    pg_query's fingerprint ignores digits in names (`t007` and `t047` fingerprint alike), so
    the relations are part of the key.
    """
    names = sorted({r.key for r in relations_in(text)})
    return f"{fingerprint(text)}:{','.join(names)}"


def walk(node: Any, parents: tuple[ast.Node, ...] = ()
         ) -> Iterator[tuple[ast.Node, tuple[ast.Node, ...]]]:
    """Every AST node under `node` with its ancestors, depth first."""
    if isinstance(node, ast.Node):
        yield node, parents
        for name in node:
            yield from walk(getattr(node, name), (*parents, node))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from walk(item, parents)


def is_dml(text: str) -> bool:
    """True for SELECT/INSERT/UPDATE/DELETE/MERGE; False for utility statements (SET, VACUUM…)."""
    try:
        return isinstance(parse_one(text).stmt, DML)
    except Unparseable:
        return False


def command(text: str) -> str | None:
    """SELECT, INSERT, UPDATE, DELETE or MERGE: the command RLS policies are chosen by."""
    try:
        stmt = parse_one(text).stmt
    except Unparseable:
        return None
    return type(stmt).__name__.removesuffix("Stmt").upper() if isinstance(stmt, DML) else None


def functions(text: str) -> set[str]:
    """Names of the functions a statement calls (unqualified, lower case)."""
    try:
        stmt = parse_one(text).stmt
    except Unparseable:
        return set()
    return {name for node, _ in walk(stmt)
            if isinstance(node, ast.FuncCall) and node.funcname
            and (name := _string(node.funcname[-1])) is not None}


def _string(node: Any) -> str | None:
    """The text of a String node (a name part), else None."""
    return node.sval if isinstance(node, ast.String) else None


def names(parts: tuple[Any, ...] | None) -> list[str]:
    """The String parts of a parsed name (a column reference's fields, a function's or an
    operator's name): `t.col` → [t, col]; `*` is left out."""
    return [name for part in parts or () if (name := _string(part)) is not None]


def plain_select_problem(text: str) -> str | None:
    """None when the statement is a plain SELECT that EXPLAIN ANALYZE may run; else why not."""
    try:
        stmt = parse_one(text).stmt
    except Unparseable as error:
        return f"cannot be parsed: {error}"
    if not isinstance(stmt, ast.SelectStmt):
        kind = type(stmt).__name__.removesuffix("Stmt").upper()
        return f"is {'an' if kind[0] in 'AEIOU' else 'a'} {kind}, not a SELECT"
    for node, _ in walk(stmt):
        if isinstance(node, ast.SelectStmt) and node.intoClause is not None:
            return "is a SELECT INTO, which creates a table"
        if isinstance(node, ast.SelectStmt) and node.lockingClause:
            return "locks rows (FOR UPDATE/SHARE)"
        if isinstance(node, ast.CommonTableExpr) and not isinstance(node.ctequery,
                                                                     ast.SelectStmt):
            return "has a data-modifying WITH clause"
    return None


def repair(text: str) -> str:
    """Make a pg_stat_statements text preparable: `interval $1` → `CAST($1 AS interval)`.

    pg_stat_statements replaces typed literals (`interval '7 days'`, `date '…'`) by `$n`,
    which PostgreSQL cannot PREPARE as written; pglast parses them, and its deparser writes
    the equivalent cast.
    """
    raw = parse_one(text)
    typed_literal_param = any(
        isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.ParamRef)
        and node.location is None  # the grammar gives `type 'literal'` casts no location
        for node, _ in walk(raw.stmt))
    if not typed_literal_param:
        return text
    return str(RawStream()(raw))


@dataclass(frozen=True)
class Relation:
    schema: str | None
    name: str
    alias: str | None

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def relations(stmt: ast.Node | None) -> list[Relation]:
    found = []
    for node, _ in walk(stmt):
        if isinstance(node, ast.RangeVar):
            assert node.relname is not None  # the grammar always names the relation
            alias = node.alias.aliasname if node.alias else None
            found.append(Relation(node.schemaname, node.relname, alias))
    return found


@functools.lru_cache(maxsize=4096)
def relations_in(text: str) -> tuple[Relation, ...]:
    """The relations a statement text names (cached like parse_one: an analysis asks several
    times for each of hundreds of texts)."""
    return tuple(relations(parse_one(text).stmt))


def touches_only_catalogs(text: str) -> bool:
    """Statements about the catalogs (or hotdata's own schema) are not the application's."""
    try:
        rels = relations_in(text)
    except Unparseable:
        return False
    if not rels:
        return True
    return all((r.schema in CATALOG_SCHEMAS) or r.name.startswith(("pg_", "hypopg"))
               for r in rels)


def hotdata_only(text: str) -> bool:
    """True for hotdata's own state queries (they share the target database by default)."""
    try:
        rels = relations_in(text)
    except Unparseable:
        return False
    return bool(rels) and all(r.schema == "hotdata" for r in rels)


@dataclass(frozen=True)
class ParamUse:
    """What a `$n` is compared with: a column (`table` may be None when unqualified), or the
    LIMIT/OFFSET count."""

    number: int
    role: str  # "column" | "limit" | "offset" | "unknown"
    table: str | None = None
    column: str | None = None
    above: bool = False  # a lower bound (`column > $n`, `>=`, BETWEEN's first): high is rare
    below: bool = False  # an upper bound (`column < $n`, `<=`, BETWEEN's second)


def _param_number(node: Any) -> int | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node.number if isinstance(node, ast.ParamRef) else None


def _column(node: Any) -> tuple[str | None, str] | None:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.ColumnRef):
        parts = names(node.fields)
        if len(parts) == 1:
            return None, parts[0]
        if len(parts) >= 2:
            return parts[-2], parts[-1]
    return None


def param_uses(text: str) -> dict[int, ParamUse]:
    """For each `$n`, the column it is compared with, when the parse tree says so."""
    stmt = parse_one(text).stmt
    aliases = {}
    for rel in relations_in(text):
        aliases[rel.alias or rel.name] = rel.key
        aliases.setdefault(rel.name, rel.key)
    single = {r.key for r in relations_in(text)}
    uses: dict[int, ParamUse] = {}
    for node, _ in walk(stmt):
        if isinstance(node, ast.SelectStmt):
            for role, expr in (("limit", node.limitCount), ("offset", node.limitOffset)):
                number = _param_number(expr)
                if number is not None:
                    uses[number] = ParamUse(number, role)
        if isinstance(node, ast.A_Expr):
            sides = [node.lexpr, *(node.rexpr if isinstance(node.rexpr, tuple | list)
                                   else (node.rexpr,))]
            columns = [c for c in map(_column, sides) if c]
            params = [n for n in map(_param_number, sides) if n is not None]
            if len(columns) == 1 and params:
                qualifier, column = columns[0]
                table = aliases.get(qualifier) if qualifier else (
                    next(iter(single)) if len(single) == 1 else None)
                lower, upper = _bounds(node)
                for number in params:
                    uses.setdefault(number, ParamUse(number, "column", table, column,
                                                     number in lower, number in upper))
    return uses


def _bounds(node: ast.A_Expr) -> tuple[set[int], set[int]]:
    """The parameters an expression uses as a column's lower and as its upper bound."""
    if node.kind == A_Expr_Kind.AEXPR_BETWEEN and isinstance(node.rexpr, tuple | list):
        ends = [_param_number(end) for end in node.rexpr[:2]] if _column(node.lexpr) else []
        return ({ends[0]} if ends and ends[0] is not None else set(),
                {ends[1]} if len(ends) > 1 and ends[1] is not None else set())
    operator = node.name[-1].sval if node.name and node.kind == A_Expr_Kind.AEXPR_OP else ""
    if operator not in ("<", "<=", ">", ">="):
        return set(), set()
    if _column(node.lexpr):  # column > $n: a lower bound
        number, lower = _param_number(node.rexpr), operator in (">", ">=")
    elif _column(node.rexpr):  # $n < column: a lower bound too
        number, lower = _param_number(node.lexpr), operator in ("<", "<=")
    else:
        return set(), set()
    if number is None:
        return set(), set()
    return ({number}, set()) if lower else (set(), {number})


def printed_expression(expression: str) -> str:
    """A boolean expression as pglast prints it (no redundant outer parentheses); as written
    when it does not parse."""
    try:
        stmt = parse_one(f"SELECT 1 WHERE {expression}").stmt
    except Unparseable:
        return expression
    assert isinstance(stmt, ast.SelectStmt) and stmt.whereClause is not None
    return str(RawStream()(stmt.whereClause))


def normal_predicate(expression: str) -> str:
    """A predicate as pglast deparses it, without casts of constants (pg_get_expr writes
    `'pending'::text` where the query said `'pending'`)."""
    stmt = parse_fresh(f"SELECT 1 WHERE {expression}").stmt  # _uncast modifies it
    assert isinstance(stmt, ast.SelectStmt)
    return str(RawStream()(_uncast(stmt.whereClause)))


def _uncast(node: Any) -> Any:
    if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const):
        return node.arg
    if isinstance(node, ast.Node):
        for name in node:
            setattr(node, name, _uncast(getattr(node, name)))
    elif isinstance(node, tuple):
        return tuple(_uncast(item) for item in node)
    return node


def same_predicate(existing: str | None, wanted: str | None) -> bool:
    """Two predicates compared as pglast deparses them (spacing, parentheses and casts of
    constants do not matter); None is no predicate."""
    if existing is None or wanted is None:
        return existing is wanted
    try:
        return normal_predicate(existing) == normal_predicate(wanted)
    except Unparseable:
        return False
