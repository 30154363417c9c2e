"""Two slow emergencies the report's health part watches: sequences running out of values
(an `integer` column fed by a `bigint` sequence runs out at 2^31 - 1, long before the
sequence), and tables whose oldest unfrozen transaction ID nears wraparound, where
PostgreSQL stops accepting writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from bot.catalog import TAG

Conn = psycopg.AsyncConnection[dict[str, Any]]

WRAPAROUND_XIDS = 2**31  # PostgreSQL refuses new transaction IDs about this far from the oldest


@dataclass(frozen=True)
class Limits:
    sequence_used: float = 0.75  # a sequence this far through the values it (or its column) takes
    xid_age: int = 1_000_000_000  # a table whose relfrozenxid is this many transactions old


# A sequence's next value against its own bound and, when it feeds a column (owned by it, or
# the column's default), that column's type bound. Ascending and descending alike.
SEQUENCES_SQL = TAG + """
WITH fed AS (
  SELECT DISTINCT ON (d.objid) d.objid AS seq, a.attrelid::regclass::text AS tbl,
         a.attname AS col, a.atttypid::regtype::text AS type
  FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
    AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
)
SELECT format('%I.%I', s.schemaname, s.sequencename) AS sequence, f.tbl, f.col, f.type,
       s.last_value, s.increment_by,
       CASE WHEN s.increment_by > 0 THEN least(s.max_value, CASE f.type
              WHEN 'smallint' THEN 32767 WHEN 'integer' THEN 2147483647 ELSE s.max_value END)
            ELSE greatest(s.min_value, CASE f.type
              WHEN 'smallint' THEN -32768 WHEN 'integer' THEN -2147483648 ELSE s.min_value END)
       END AS bound,
       CASE WHEN s.increment_by > 0 THEN s.min_value ELSE s.max_value END AS start
FROM pg_sequences s
LEFT JOIN fed f ON f.seq = format('%I.%I', s.schemaname, s.sequencename)::regclass
WHERE s.last_value IS NOT NULL
  AND s.schemaname NOT IN ('pg_catalog', 'information_schema')
"""

# A user table's age is its own or its TOAST table's, the older (VACUUM FREEZE does both).
WRAPAROUND_SQL = TAG + """
SELECT * FROM (
  SELECT c.oid::regclass::text AS tbl,
         greatest(age(c.relfrozenxid), age(coalesce(t.relfrozenxid, c.relfrozenxid))) AS xid_age
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
  WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%%'
) aged
WHERE xid_age >= %s
ORDER BY xid_age DESC LIMIT 10
"""


async def sequences(conn: Conn, limits: Limits = Limits()) -> list[dict[str, Any]]:
    """The sequences past `limits.sequence_used` of their values, most used first: name, the
    column it feeds, its type, how far it is (`used`, 0 to 1) and the values left."""
    cur = await conn.execute(SEQUENCES_SQL)
    found = []
    for row in await cur.fetchall():
        span = abs(int(row["bound"]) - int(row["start"]))
        used = abs(int(row["last_value"]) - int(row["start"])) / span if span else 1.0
        if used >= limits.sequence_used:
            found.append({"sequence": row["sequence"], "table": row["tbl"],
                          "column": row["col"], "type": row["type"], "used": round(used, 4),
                          "left": abs(int(row["bound"]) - int(row["last_value"]))
                          // abs(int(row["increment_by"]))})
    return sorted(found, key=lambda s: -s["used"])


async def wraparound(conn: Conn, limits: Limits = Limits()) -> list[dict[str, Any]]:
    """The tables whose oldest unfrozen transaction is at least `limits.xid_age` old, oldest
    first, with how far to wraparound they are (`used`, 0 to 1)."""
    cur = await conn.execute(WRAPAROUND_SQL, (limits.xid_age,))
    return [{"table": row["tbl"], "xid_age": int(row["xid_age"]),
             "used": round(int(row["xid_age"]) / WRAPAROUND_XIDS, 4)}
            for row in await cur.fetchall()]


def sequence_fix(found: dict[str, Any]) -> str:
    if found["table"] and found["type"] in ("smallint", "integer"):
        return (f"ALTER TABLE {found['table']} ALTER COLUMN {found['column']} TYPE bigint "
                f"(rewrites the table: plan it), then ALTER SEQUENCE {found['sequence']} "
                "AS bigint")
    return f"ALTER SEQUENCE {found['sequence']} AS bigint MAXVALUE … (or CYCLE, if reuse is safe)"


WRAPAROUND_FIX = ("VACUUM (FREEZE, VERBOSE) the table, and find what holds autovacuum back: "
                  "long transactions, prepared transactions, stale replication slots")
