"""What a B-tree index takes on disk, from PostgreSQL's own page layout and the columns'
statistics, deduplication included.

HypoPG's size estimate pads every entry and knows nothing of deduplication (PostgreSQL 13 and
later keep one key and a list of 6-byte heap pointers for equal keys). On a low-cardinality
column it overstates the index by 3 to 5 times, and even on unique keys by about a third; a
selection priced with it would take a small index on `status` for as large as a covering one.

The layout: a leaf entry is an 8-byte header and the columns' values, each aligned as its type
wants (a short text or numeric needs no alignment), rounded up to 8 bytes, plus a 4-byte line
pointer; CREATE INDEX fills leaf pages to 90 %. With deduplication (every key column's type
supports it, no INCLUDE columns), the entries of one key hold up to POSTING_TIDS heap pointers
each. Keys drawn from several columns are taken as independent (the product of their distinct
values, at most the table's rows): that can only see fewer duplicates than there are, so the
estimate errs towards a larger index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psycopg

from bot.advisor.model import Candidate
from bot.analysis.params import distinct_count
from bot.catalog import TAG

PAGE = 8192
USABLE = PAGE - 24 - 16  # page header, B-tree special space
LEAF_FILL = 0.90  # CREATE INDEX's leaf fillfactor
ENTRY_HEADER = 8  # IndexTupleData, MAXALIGNed
LINE_POINTER = 4
HEAP_POINTER = 6
POSTING_TIDS = 220  # a posting list is at most about half of BTMaxItemSize: ~220 pointers
SHORT_VARLENA = 127  # values this short are stored with a 1-byte header, unaligned
ALIGN = {"c": 1, "s": 2, "i": 4, "d": 8}

# Per column: its storage (length, alignment), its statistics, and whether its B-tree
# operator class can deduplicate (support function 4, "equalimage": numeric, floats and
# jsonb cannot; text with a deterministic collation can).
COLUMNS_SQL = TAG + """
SELECT w.sch || '.' || w.tbl AS table, a.attname AS column, t.typlen AS length,
       t.typalign AS align, s.avg_width AS width, s.n_distinct AS distinct,
       EXISTS (SELECT 1 FROM pg_opclass o
               JOIN pg_amproc p ON p.amprocfamily = o.opcfamily AND p.amprocnum = 4
                    AND p.amproclefttype = o.opcintype
               WHERE o.opcmethod = (SELECT oid FROM pg_am WHERE amname = 'btree')
                 AND o.opcdefault
                 AND (o.opcintype = t.oid OR o.opcintype = t.typbasetype
                      OR EXISTS (SELECT 1 FROM pg_cast k WHERE k.castsource = t.oid
                                 AND k.casttarget = o.opcintype AND k.castmethod = 'b')))
       AND coalesce((SELECT l.collisdeterministic FROM pg_collation l
                     WHERE l.oid = a.attcollation), true) AS equalimage
FROM unnest(%s::text[], %s::text[]) AS w(sch, tbl)
JOIN pg_namespace n ON n.nspname = w.sch
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.tbl
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_stats s ON s.schemaname = w.sch AND s.tablename = w.tbl AND s.attname = a.attname
"""


@dataclass(frozen=True)
class Column:
    """What sizing an index needs of one column."""

    length: int  # pg_type.typlen: bytes, or -1 for a variable-length type
    align: str  # pg_type.typalign
    width: int  # pg_stats.avg_width
    distinct: float  # pg_stats.n_distinct: a count, or minus a share of the rows
    equalimage: bool  # its B-tree operator class can deduplicate

    def stored(self, offset: int) -> int:
        """Where this column's value ends when it starts at `offset`."""
        if self.length < 0 and self.width < SHORT_VARLENA:
            return offset + self.width
        return _aligned(offset, ALIGN.get(self.align, 8)) + (
            self.length if self.length > 0 else self.width)


def _aligned(offset: float, step: int) -> int:
    """`offset` rounded up to a multiple of `step`."""
    return math.ceil(offset / step) * step


Columns = dict[str, dict[str, Column]]  # schema.table → column → what sizing needs


async def columns(conn: psycopg.AsyncConnection[dict[str, Any]],
                  tables: list[tuple[str, str]]) -> Columns:
    """The sizing facts of every analysed column of `tables` ((schema, name) pairs)."""
    cur = await conn.execute(COLUMNS_SQL, ([s for s, _ in tables], [t for _, t in tables]))
    found: Columns = {}
    for row in await cur.fetchall():
        found.setdefault(row["table"], {})[row["column"]] = Column(
            int(row["length"]), str(row["align"]), int(row["width"] or 0),
            float(row["distinct"] or 0), bool(row["equalimage"]))
    return found


def size(candidate: Candidate, rows: int, known: dict[str, Column]) -> int | None:
    """The bytes `candidate` takes once built on a table of `rows` rows, or None when the
    rows are not known, a column has no statistics or the index is partial (how many rows it
    holds is not known here)."""
    names = [*candidate.key_columns, *candidate.include]
    if rows <= 0 or candidate.where or any(n not in known for n in names):
        return None
    end = 0
    for name in names:
        end = known[name].stored(end)
    entry = _aligned(ENTRY_HEADER + end, 8)
    per_row = float(entry + LINE_POINTER)
    keys = [known[n] for n in candidate.key_columns]
    if not candidate.include and all(k.equalimage for k in keys):
        distinct = min(float(rows), math.prod(max(1.0, distinct_count(k.distinct, rows))
                                              for k in keys))
        duplicates = min(rows / distinct, POSTING_TIDS)
        if duplicates >= 2:
            posting = _aligned(ENTRY_HEADER + end + HEAP_POINTER * duplicates, 8)
            per_row = min(per_row, (posting + LINE_POINTER) / duplicates)
    leaves = math.ceil(rows * per_row / (USABLE * LEAF_FILL))
    # one pivot entry per leaf page in the levels above, a metapage and a root
    inner = math.ceil(leaves * (entry + LINE_POINTER) / USABLE)
    return (max(leaves, 1) + inner + 2) * PAGE
