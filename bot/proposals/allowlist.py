"""The only statements hotdata ever applies, proven with PostgreSQL's own parser.

`CREATE INDEX CONCURRENTLY IF NOT EXISTS` (on columns: no function calls in its expressions
or predicate), `DROP INDEX CONCURRENTLY IF EXISTS` and `ANALYZE`, one statement per text;
everything else is refused before it reaches the database.
"""

from __future__ import annotations

import pglast
from pglast import ast
from pglast.enums.parsenodes import ObjectType
from pglast.visitors import Visitor

# Node names whose words do not say the statement (AlterTableStmt also alters indexes, views…).
KINDS = {"CreateStmt": "CREATE TABLE", "CreateTableAsStmt": "CREATE TABLE AS",
         "IndexStmt": "CREATE INDEX", "VacuumStmt": "VACUUM", "RenameStmt": "ALTER … RENAME"}


def _kind(stmt: ast.Node) -> str:
    """The statement as a reader names it: DROP TABLE, ALTER TABLE, DELETE, …"""
    if isinstance(stmt, ast.DropStmt):
        return "DROP " + ObjectType(stmt.removeType).name.removeprefix("OBJECT_")
    if isinstance(stmt, ast.AlterTableStmt):
        return "ALTER " + ObjectType(stmt.objtype).name.removeprefix("OBJECT_")
    name = type(stmt).__name__
    if name in KINDS:
        return KINDS[name]
    words = "".join(f" {c}" if c.isupper() else c for c in name.removesuffix("Stmt"))
    return words.strip().upper()


class _Calls(Visitor):
    """The functions a statement calls, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def visit_FuncCall(self, ancestors: object, node: ast.FuncCall) -> None:
        self.names.append(".".join(part.sval for part in node.funcname))


class Refused(ValueError):
    """The text is not one allowed statement; the message says what it is instead."""


def check(text: str) -> ast.Node:
    """The parsed statement when `text` is exactly one allowed statement; Refused otherwise."""
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as error:
        raise Refused(f"refused: the statement does not parse ({error})") from None
    if len(statements) != 1:
        raise Refused(f"refused: expected exactly one statement, found {len(statements)}")
    stmt = statements[0].stmt
    if isinstance(stmt, ast.IndexStmt):
        if not stmt.concurrent:
            raise Refused("refused: CREATE INDEX without CONCURRENTLY would block writes to "
                          "the table while it builds")
        if not stmt.if_not_exists:
            raise Refused("refused: CREATE INDEX must say IF NOT EXISTS so a retry is safe")
        calls = _Calls()
        calls(stmt)
        if calls.names:  # a function runs for every row indexed, with the migrator's rights
            raise Refused(f"refused: the index calls {', '.join(sorted(set(calls.names)))}; "
                          "hotdata applies indexes on columns only, review and apply this one "
                          "yourself")
        return stmt
    if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_INDEX:
        if not stmt.concurrent or not stmt.missing_ok:
            raise Refused("refused: only DROP INDEX CONCURRENTLY IF EXISTS is allowed")
        if len(stmt.objects) != 1:
            raise Refused("refused: drop one index per statement")
        return stmt
    if isinstance(stmt, ast.VacuumStmt) and not stmt.is_vacuumcmd:
        return stmt
    kind = _kind(stmt)
    raise Refused(f"refused: {kind} statements are never applied by hotdata; only CREATE INDEX "
                  "CONCURRENTLY IF NOT EXISTS, DROP INDEX CONCURRENTLY IF EXISTS and ANALYZE")
