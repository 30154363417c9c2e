"""Step 2: values for `$n` parameters — a common, a median and a rare one from `pg_stats`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from bot.catalog import TAG, Table
from bot.sqltext import ParamUse

LABELS = ("common", "median", "rare")

# One lookup per wanted column (OFFSET 0 keeps it a per-row index lookup): joining the whole
# pg_stats view would check column privileges on every column of the database.
STATS_SQL = TAG + """
SELECT w.sch || '.' || w.tbl AS table, w.col AS column, s.mcv, s.mcf, s.hist, s.n_distinct,
       s.null_frac
FROM unnest(%s::text[], %s::text[], %s::text[]) AS w(sch, tbl, col)
CROSS JOIN LATERAL (
    SELECT st.most_common_vals::text::text[] AS mcv, st.most_common_freqs AS mcf,
           st.histogram_bounds::text::text[] AS hist, st.n_distinct, st.null_frac
    FROM pg_stats st
    WHERE st.schemaname = w.sch AND st.tablename = w.tbl AND st.attname = w.col
    OFFSET 0) AS s
"""

# Values for parameters no statistic describes, by the type PREPARE inferred.
DEFAULTS = {
    "integer": "1", "bigint": "1", "smallint": "1", "numeric": "1", "real": "1",
    "double precision": "1", "boolean": "true", "text": "x", "character varying": "x",
    "uuid": "00000000-0000-0000-0000-000000000000", "interval": "7 days",
    "timestamp with time zone": "now", "timestamp without time zone": "now",
    "date": "today", "jsonb": "{}", "json": "{}",
}
LIMIT_VALUE = "20"


@dataclass(frozen=True)
class ColumnValues:
    common: str | None
    median: str | None
    rare: str | None

    def get(self, label: str) -> str | None:
        value: str | None = getattr(self, label)
        return value


def by_frequency(mcv: list[str], freqs: list[float] | None) -> list[str]:
    """The most common values, the most frequent first (as given when frequencies are
    missing)."""
    if not freqs or len(freqs) != len(mcv):
        return list(mcv)
    return [mcv[i] for i in sorted(range(len(mcv)), key=lambda i: -freqs[i])]


def distinct_count(n_distinct: float, rows: int) -> float:
    """pg_stats' n_distinct as a count: it is one, or minus a share of the rows."""
    return n_distinct if n_distinct >= 0 else -n_distinct * rows


def pick(mcv: list[str] | None, freqs: list[float] | None,
         hist: list[str] | None) -> ColumnValues:
    """Heaviest value (first most-common value), a middle one, and the rarest one known.

    With a histogram, its middle bound is a typical value and its first bound a rare one;
    with most-common values only, they are ordered by frequency.
    """
    mcv = mcv or []
    hist = hist or []
    common = mcv[0] if mcv else (hist[len(hist) // 2] if hist else None)
    if hist:
        return ColumnValues(common, hist[len(hist) // 2], hist[0])
    if mcv:
        order = by_frequency(mcv, freqs)
        return ColumnValues(common, order[len(order) // 2], order[-1])
    return ColumnValues(None, None, None)


@dataclass(frozen=True)
class ColumnStats:
    """What pg_stats says about one column."""

    mcv: list[str]
    freqs: list[float]
    hist: list[str]
    n_distinct: float
    null_frac: float

    def values(self) -> ColumnValues:
        return pick(self.mcv, self.freqs, self.hist)

    def frequency(self, value: str) -> float | None:
        """The share of rows holding `value`, when pg_stats knows it."""
        if value in self.mcv:
            return self.freqs[self.mcv.index(value)]
        if self.mcv and not self.hist:  # the most-common values cover every value
            return max(0.0, 1.0 - self.null_frac - sum(self.freqs))
        return None

    def distinct(self, rows: int) -> float:
        return distinct_count(self.n_distinct, rows)

    def several(self, label: str, count: int) -> list[str]:
        """`count` distinct values of the `label` kind, for an IN list: the most common ones,
        some from the middle, or the rarest known (the last repeated when there are fewer;
        none when pg_stats knows no value)."""
        common = by_frequency(self.mcv, self.freqs)
        middle = len(self.hist) // 2
        if label == "common":
            pool = common + self.hist[middle:] + self.hist[:middle]
        elif label == "median":
            half = len(common) // 2
            pool = (self.hist[middle:] + self.hist[:middle] if self.hist
                    else common[half:] + common[:half])
        else:
            pool = self.hist if self.hist else common[::-1]
        known = list(dict.fromkeys(common + self.hist))
        picked = sorted(list(dict.fromkeys(pool))[:count], key=known.index)  # one order
        return [*picked, *[picked[-1]] * (count - len(picked))] if picked else []


async def column_stats(conn: psycopg.AsyncConnection[dict[str, Any]],
                       columns: set[tuple[str, str, str]]
                       ) -> dict[tuple[str, str], ColumnStats]:
    """(schema.table, column) → statistics for (schema, table, column) triples, one query."""
    if not columns:
        return {}
    triples = sorted(columns)
    cur = await conn.execute(STATS_SQL, ([t[0] for t in triples], [t[1] for t in triples],
                                         [t[2] for t in triples]))
    return {(row["table"], row["column"]): ColumnStats(
        row["mcv"] or [], list(row["mcf"] or []), row["hist"] or [],
        float(row["n_distinct"] or 0), float(row["null_frac"] or 0))
        for row in await cur.fetchall()}


def used_columns(uses: list[ParamUse], tables: dict[str, Table]) -> set[tuple[str, str, str]]:
    """The (schema, table, column) triples parameters are compared with."""
    return {(tables[u.table].schema, tables[u.table].name, u.column) for u in uses
            if u.role == "column" and u.table in tables and u.column}


def observed_limit(calls: int, rows: int) -> str | None:
    """The LIMIT a parameterised statement's calls really use: the rows a call returns on
    average (pg_stat_statements), when it returned any."""
    if calls <= 0 or rows <= 0:
        return None
    return str(max(1, round(rows / calls)))


def value_sets(uses: dict[int, ParamUse], types: list[str], tables: dict[str, Table],
               stats: dict[tuple[str, str], ColumnStats],
               limit: str = LIMIT_VALUE) -> dict[str, list[str | None]]:
    """label → one value per parameter (a LIMIT parameter gets `limit`); identical sets are
    listed once."""
    if not types:
        return {"none": []}
    sets: dict[str, list[str | None]] = {}
    for label in LABELS:
        values: list[str | None] = []
        for number, type_name in enumerate(types, 1):
            use = uses.get(number)
            values.append(limit if use is not None and use.role == "limit"
                          else _value(use, type_name, label, tables, stats))
        _together(values, uses, tables, stats, label)
        if values not in sets.values():
            sets[label] = values
    return sets


def _together(values: list[str | None], uses: dict[int, ParamUse], tables: dict[str, Table],
              stats: dict[tuple[str, str], ColumnStats], label: str) -> None:
    """Parameters compared with the same column, set together in `values`: a range (a lower
    and an upper bound) spans part of the column's histogram, and an IN list holds distinct
    values of the label's kind. One value for all would plan a range from a value to itself,
    which holds no row, and a list of one value."""
    groups: dict[tuple[str, str], list[ParamUse]] = {}
    for use in uses.values():
        if (use.role == "column" and use.table in tables and use.column
                and use.number <= len(values)):
            groups.setdefault((tables[use.table].qualified, use.column), []).append(use)
    for key, group in groups.items():
        found = stats.get(key)
        if found is None or len(group) < 2:
            continue
        lower, upper = [u for u in group if u.above], [u for u in group if u.below]
        if lower and upper and len(found.hist) >= 3:
            low, high = span(found.hist, label)
            for use in lower:
                values[use.number - 1] = low
            for use in upper:
                values[use.number - 1] = high
        listed = sorted((u for u in group if not u.above and not u.below),
                        key=lambda u: u.number)
        several = found.several(label, len(listed)) if len(listed) >= 2 else []
        for use, value in zip(listed, several, strict=False):
            values[use.number - 1] = value


# A common range spans this share of the histogram's buckets; a median one, one bucket in
# the middle; a rare one, the top bucket (where a lower bound is selective).
COMMON_SPAN = 0.1


def span(hist: list[str], label: str) -> tuple[str, str]:
    """The bounds of a range of the `label` kind over a histogram of at least 3 bounds."""
    buckets = len(hist) - 1
    if label == "rare":
        return hist[-2], hist[-1]
    middle = buckets // 2
    if label == "median":
        return hist[middle], hist[middle + 1]
    half = max(1, round(buckets * COMMON_SPAN / 2))
    return hist[max(0, middle - half)], hist[min(buckets, middle + half)]


def _value(use: ParamUse | None, type_name: str, label: str, tables: dict[str, Table],
           stats: dict[tuple[str, str], ColumnStats]) -> str | None:
    if use is not None and use.role == "limit":
        return LIMIT_VALUE
    if use is not None and use.role == "offset":
        return "0"
    if use is not None and use.role == "column" and use.table in tables and use.column:
        found = stats.get((tables[use.table].qualified, use.column))
        if found is not None and use.above and label == "rare" and found.hist:
            return found.hist[-1]  # a lower bound is selective at the top of the range
        if found is not None and found.values().get(label) is not None:
            return found.values().get(label)
    return DEFAULTS.get(type_name)
