"""The plain data of the advisor: candidate indexes and what was decided about them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, NotRequired, TypedDict

from pglast import parser
from pglast.stream import maybe_double_quote_name

MAX_IDENTIFIER = 63


def _words(predicate: str) -> list[str]:
    """`status = 'pending'` → [status, pending]; `NOT read` → [not, read] (pglast's scanner)."""
    words = []
    for token in parser.scan(predicate):
        if token.name in {"IDENT", "SCONST", "ICONST"} or token.kind != "NO_KEYWORD":
            text = predicate[token.start:token.end + 1].strip("'\"").lower()
            words.append("".join(ch if ch.isalnum() else "_" for ch in text))
    return [w for w in words if w]


def quote(identifier: str) -> str:
    """A catalog name as SQL, double-quoted exactly when PostgreSQL needs it (pglast's rule)."""
    return str(maybe_double_quote_name(identifier))


@dataclass(frozen=True)
class Candidate:
    """An index that could exist: keys in order (`"created_at DESC"`), an optional partial
    predicate (`NOT read`, `status = 'pending'`), optional INCLUDE columns."""

    schema: str
    table: str
    columns: tuple[str, ...]
    where: str | None = None
    include: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(c.removesuffix(" DESC") for c in self.columns)

    @property
    def name(self) -> str:
        """A readable, distinct name: `idx_<table>_<columns>[_desc][_<predicate words>]
        [_incl_<columns>]`, within PostgreSQL's 63 bytes (longer ones end in a digest of the
        whole definition)."""
        parts = ["idx", self.table]
        for column in self.columns:
            parts.append(column.removesuffix(" DESC"))
            if column.endswith(" DESC"):
                parts.append("desc")
        if self.where:
            parts += _words(self.where)
        if self.include:
            parts += ["incl", *self.include]
        base = "_".join(parts)
        if len(base.encode()) <= MAX_IDENTIFIER:
            return base
        digest = hashlib.sha1(repr(self).encode()).hexdigest()[:8]
        head = base.encode()[:MAX_IDENTIFIER - 9].decode(errors="ignore")
        return f"{head}_{digest}"

    def create_sql(self, *, concurrently: bool = False, named: bool = False,
                   only: bool = False) -> str:
        """`CREATE INDEX …`: anonymous for HypoPG, named (and online for a migration); `only`:
        the empty index of a partitioned table alone (`IF NOT EXISTS … ON ONLY`), which its
        partitions' indexes are attached to."""
        keys = ", ".join(quote(c.removesuffix(" DESC")) + (" DESC" if c.endswith(" DESC")
                                                             else "") for c in self.columns)
        head = ("CREATE INDEX CONCURRENTLY IF NOT EXISTS" if concurrently
                else "CREATE INDEX IF NOT EXISTS" if only else "CREATE INDEX")
        if concurrently or named or only:
            head += f" {quote(self.name)}"
        text = (f"{head} ON {'ONLY ' if only else ''}{quote(self.schema)}.{quote(self.table)} "
                f"({keys})")
        if self.include:
            text += f" INCLUDE ({', '.join(quote(c) for c in self.include)})"
        if self.where:
            text += f" WHERE {self.where}"
        return text

    def widens(self, other: Candidate) -> bool:
        """True when this index serves everything `other` serves and more: a longer key, or
        the same key holding more columns (INCLUDE) for index-only scans."""
        if (self == other or self.qualified != other.qualified or self.where != other.where
                or self.columns[:len(other.columns)] != other.columns):
            return False
        held = set(self.key_columns) | set(self.include)
        return set(other.include) <= held and (len(self.columns) > len(other.columns)
                                               or set(self.include) > set(other.include))


@dataclass
class Choice:
    """A chosen candidate and its evidence."""

    candidate: Candidate
    size_bytes: int
    benefit_ms: float
    write_penalty_ms: float
    queries: list[str] = field(default_factory=list)
    cost_before: float = 0.0
    cost_after: float = 0.0
    measured_before_ms: float | None = None
    measured_after_ms: float | None = None
    build_seconds: float | None = None
    verified: bool = False


class Declined(TypedDict):
    """A statement a finding says needs an index, and why no recommendation serves it."""

    statement: str  # its label, as in a recommendation's `queries`
    candidate: str | None  # the CREATE INDEX that would have served it best, if any
    reason: str
    saving_ms: float | None  # over pg_stat_statements' window, that index alone
    cost_ms: float | None  # what it would cost the window's writes


class ServedStatement(TypedDict):
    """A statement a recommended index serves, as costed: measured again after applying."""

    label: str
    text: str
    values: list[str | None]  # the first (heaviest) value set
    app_role: str | None  # the application's role it was costed as, None for the owner


class Recommendation(TypedDict):
    """An index to create, with its evidence: what `recommend` returns, an analysis report
    stores and a proposal keeps as its `evidence`. A rollback proposal keeps the evidence of
    the index it drops, with `action` "drop", its DROP statement and `rollback_of`."""

    action: Literal["create", "drop"]
    table: str  # schema.table
    index: str
    columns: list[str]  # keys in order, `col DESC` for a descending one
    where: str | None
    include: list[str]
    sql: str  # CREATE INDEX CONCURRENTLY IF NOT EXISTS …;
    queries: list[str]  # labels of the statements it serves
    cost_before: float
    cost_after: float
    measured_before_ms: float | None  # filled in on a scratch copy
    measured_after_ms: float | None
    size_bytes: int | None  # estimated (bot.advisor.btree) until built on a scratch copy
    size_estimated: bool
    costing: Literal["hypopg", "built"]  # how candidates were costed: HypoPG, or built on a copy
    benefit_ms: float
    write_penalty_ms: float
    costed_as: list[str]  # roles: "owner", or the application's
    statements: list[ServedStatement]
    build_seconds: NotRequired[float]  # when built on a scratch copy
    lint: NotRequired[list[dict[str, str]]]  # squawk's findings, added when proposed
    rollback_of: NotRequired[int]  # the applied proposal a drop rolls back
    # with the Prisma layout: the model, its @@index line and a note (or why there is none)
    prisma: NotRequired[dict[str, str | None]]


class Drop(TypedDict):
    """An index cleanup can drop, with its evidence (`bot.advisor.cleanup`)."""

    action: Literal["drop"]
    table: str  # schema.table
    index: str
    sql: str  # DROP INDEX CONCURRENTLY IF EXISTS …
    size_bytes: int
    reason: str
    write_cost: str
    writes: int
    scans: int | None
    columns: list[str]
    include: list[str]
    where: str | None
