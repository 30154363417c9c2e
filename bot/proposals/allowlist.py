"""The only statements hotdata ever applies, proven with PostgreSQL's own parser.

`CREATE INDEX CONCURRENTLY IF NOT EXISTS` (not UNIQUE, on plain columns with a built-in access
method, and a predicate comparing columns with constants, no tablespace or storage parameter),
`DROP INDEX CONCURRENTLY IF EXISTS` and `ANALYZE`, one statement per text; everything else is
refused before it reaches the database. For a partitioned table, whose index PostgreSQL cannot
build CONCURRENTLY in one statement, also the steps that build it online: `CREATE INDEX IF NOT
EXISTS … ON ONLY` the partitioned table (an empty, invalid index, made at once) and `ALTER INDEX
… ATTACH PARTITION` of each partition's index, built CONCURRENTLY.
"""

from __future__ import annotations

import pglast
from pglast import ast
from pglast.enums.parsenodes import A_Expr_Kind, AlterTableType, ObjectType

from bot.errors import UserError

# Node names whose words do not say the statement (AlterTableStmt also alters indexes, views…).
KINDS = {"CreateStmt": "CREATE TABLE", "CreateTableAsStmt": "CREATE TABLE AS",
         "IndexStmt": "CREATE INDEX", "VacuumStmt": "VACUUM", "RenameStmt": "ALTER … RENAME"}


def _kind(stmt: ast.Node) -> str:
    """The statement as a reader names it: DROP TABLE, ALTER TABLE, DELETE, …"""
    if isinstance(stmt, ast.DropStmt) and stmt.removeType is not None:
        return "DROP " + ObjectType(stmt.removeType).name.removeprefix("OBJECT_")
    if isinstance(stmt, ast.AlterTableStmt) and stmt.objtype is not None:
        return "ALTER " + ObjectType(stmt.objtype).name.removeprefix("OBJECT_")
    name = type(stmt).__name__
    if name in KINDS:
        return KINDS[name]
    words = "".join(f" {c}" if c.isupper() else c for c in name.removesuffix("Stmt"))
    return words.strip().upper()


# What an index hotdata applies may hold: columns, with a built-in access method, and a
# predicate of columns compared with constants. Anything else can run code of someone's
# choosing for every row (a function, a cast to a domain, an operator class or operator of a
# schema, an access method).
ACCESS_METHODS = {"btree", "hash", "gist", "gin", "brin", "spgist"}
OPERATORS = {"=", "<>", "!=", "<", ">", "<=", ">="}
MAX_DEPTH = 32  # a predicate hotdata writes nests a few levels; a deeper one is not ours


def _not_plain(node: object, depth: int = 0) -> str | None:
    """Why a predicate node is more than columns compared with constants, or None."""
    if depth > MAX_DEPTH:
        return f"nests its predicate more than {MAX_DEPTH} levels deep"
    if isinstance(node, tuple):
        return next((why for item in node if (why := _not_plain(item, depth + 1))), None)
    if isinstance(node, ast.FuncCall):
        return "calls " + ".".join(part.sval for part in node.funcname or ())
    if isinstance(node, ast.BoolExpr):
        return _not_plain(node.args, depth + 1)
    if isinstance(node, ast.A_Expr):
        names = [part.sval for part in node.name or ()]
        if node.kind not in (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_IN) or len(names) != 1 \
                or names[0] not in OPERATORS:
            return f"uses the operator {'.'.join(names)}"
        return _not_plain(node.lexpr, depth + 1) or _not_plain(node.rexpr, depth + 1)
    if isinstance(node, ast.NullTest | ast.BooleanTest):
        return _not_plain(node.arg, depth + 1)
    if isinstance(node, ast.ColumnRef):
        plain = node.fields is not None and all(isinstance(f, ast.String) for f in node.fields)
        return None if plain else "reads *"
    if isinstance(node, ast.A_Const) or node is None:
        return None
    return f"holds a {type(node).__name__}"


def _not_columns(stmt: ast.IndexStmt) -> str | None:
    """Why an index is more than plain columns with a plain predicate, or None."""
    if stmt.unique:  # it would change what the application may write
        return "is UNIQUE"
    if stmt.tableSpace:
        return f"names the tablespace {stmt.tableSpace}"
    if stmt.options:
        return "sets storage parameters"
    if stmt.accessMethod not in ACCESS_METHODS:
        return f"uses the access method {stmt.accessMethod}"
    for elem in (*(stmt.indexParams or ()), *(stmt.indexIncludingParams or ())):
        if elem.expr is not None:
            return _not_plain(elem.expr) or "indexes an expression"
        if elem.opclass or elem.collation:
            return f"names an operator class or collation for {elem.name}"
    return _not_plain(stmt.whereClause)


class Refused(UserError):
    """The text is not one allowed statement; the message says what it is instead."""


def check(text: str, *, partition_step: bool = False) -> ast.Node:
    """The parsed statement when `text` is exactly one allowed statement; Refused otherwise.
    With `partition_step` (only for the steps hotdata derives itself, on a table the catalog
    says is partitioned), also `CREATE INDEX IF NOT EXISTS … ON ONLY` and `ALTER INDEX …
    ATTACH PARTITION`."""
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as error:
        raise Refused(f"refused: the statement does not parse ({error})") from None
    except RecursionError:
        raise Refused(f"refused: the statement nests more than {MAX_DEPTH} levels deep") from None
    if len(statements) != 1:
        raise Refused(f"refused: expected exactly one statement, found {len(statements)}")
    stmt = statements[0].stmt
    if stmt is None:  # a parsed statement always has its node; fail closed all the same
        raise Refused("refused: the statement does not parse")
    if isinstance(stmt, ast.IndexStmt):
        on_only = partition_step and stmt.relation is not None and not stmt.relation.inh
        if not stmt.concurrent and not on_only:
            raise Refused("refused: CREATE INDEX without CONCURRENTLY would block writes to "
                          "the table while it builds")
        if not stmt.if_not_exists:
            raise Refused("refused: CREATE INDEX must say IF NOT EXISTS so a retry is safe")
        why = _not_columns(stmt)
        if why is not None:  # it could run code for every row indexed, or change the table
            raise Refused(f"refused: the index {why}; hotdata applies plain indexes on columns "
                          "only, review and apply this one yourself")
        return stmt
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_INDEX:
        if not stmt.concurrent or not stmt.missing_ok:
            raise Refused("refused: only DROP INDEX CONCURRENTLY IF EXISTS is allowed")
        if len(stmt.objects or ()) != 1:
            raise Refused("refused: drop one index per statement")
        return stmt
    if isinstance(stmt, ast.VacuumStmt) and not stmt.is_vacuumcmd:
        return stmt
    if (partition_step and isinstance(stmt, ast.AlterTableStmt)
            and stmt.objtype == ObjectType.OBJECT_INDEX
            and stmt.cmds and len(stmt.cmds) == 1 and isinstance(stmt.cmds[0], ast.AlterTableCmd)
            and stmt.cmds[0].subtype == AlterTableType.AT_AttachPartition):
        return stmt
    kind = _kind(stmt)
    raise Refused(f"refused: {kind} statements are never applied by hotdata; only CREATE INDEX "
                  "CONCURRENTLY IF NOT EXISTS, DROP INDEX CONCURRENTLY IF EXISTS and ANALYZE")
