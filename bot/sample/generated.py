"""Generated workloads: a random but realistic schema, its data and its statement mix, per seed.

HotDash (`hotdash.py`) is the workload the index advisor was built against; this module makes
workloads nobody tuned it for, so tests and benchmarks can check that its advice generalises.
Everything comes from `random.Random(seed)` (never the global generator) and from PostgreSQL's
`random()` after `setseed`, so one seed is always the same schema, the same data and the same
statements with the same parameter values.

What a seed gives:

- 2 to 6 tables, each with an `id` identity primary key, 1 or 2 category columns (`status`,
  `kind`, … with a few values, one of them holding most rows), a timestamp, a numeric amount
  and a text column or two. The second table, and most after it, reference an earlier one
  (sometimes two) through a foreign key whose values are skewed: `1 + floor(N * random() ^ k)`
  gives the first parents most of the children. Some tables are written in timestamp order
  (physically correlated, as an append-only table is), others not;
- small data (`scale` 1.0: 20,000 to 100,000 rows in all), generated in SQL with
  `generate_series`, keys added after the data (one index build instead of row by row), then
  `VACUUM (ANALYZE)`. The only indexes are the primary keys and, on some tables, a unique
  e-mail: finding the others is the advisor's job;
- a plain view over a filtered subset of one table, and sometimes a `security_barrier` one;
- 5 to 15 parameterised reads (equality on a foreign key or a category, ranges on timestamps
  and amounts, `IN` lists, `ORDER BY … LIMIT` by a column, an ordinal or a select alias, joins
  between a parent and its children, statements through the views, `count(*)`, `GROUP BY`)
  and 2 to 4 writes (single-row INSERTs, UPDATEs of a category, DELETEs), each with a number of
  calls.

Statements are written with `$n` parameters, as an application's driver sends them; `run`
executes them through the extended protocol, so pg_stat_statements records them normalised.
Names of tables and columns come from the fixed pools below, never from input, so the SQL here
is assembled with plain string formatting.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.types.numeric import Int8

from bot.sample.hotdash import to_client_sql


class GeneratedError(RuntimeError):
    """The workload could not be loaded (for instance: its tables already exist)."""


# --- what the schemas are made of -------------------------------------------------------------

# (table, singular): the singular names the foreign key columns (`ticket_id`).
TABLE_NAMES: tuple[tuple[str, str], ...] = (
    ("accounts", "account"), ("customers", "customer"), ("projects", "project"),
    ("orders", "order"), ("invoices", "invoice"), ("tickets", "ticket"),
    ("shipments", "shipment"), ("payments", "payment"), ("events", "event"),
    ("comments", "comment"), ("tasks", "task"), ("readings", "reading"),
    ("devices", "device"), ("sessions", "session"),
)
# Category columns and their values; a table takes the first 3 to all of them.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "status": ("active", "pending", "closed", "failed", "archived"),
    "state": ("open", "in_progress", "resolved", "blocked"),
    "kind": ("standard", "express", "bulk", "internal", "trial"),
    "priority": ("normal", "low", "high", "urgent"),
    "channel": ("web", "mobile", "api", "email", "phone"),
}
TIME_COLUMNS = ("created_at", "occurred_at", "opened_at", "placed_at", "recorded_at")
AMOUNT_COLUMNS = ("amount", "total", "price", "weight_kg", "duration_s")
# Timestamps lie in the `days` before this fixed moment (not now(): same seed, same data).
ANCHOR = "2025-01-01 00:00:00+00"
LOREM = (
    "Quarterly review of the regional pipeline shows steady growth, a few delayed shipments "
    "waiting on customs, two escalations about billing and a backlog of routine maintenance "
    "tasks that the night shift will pick up before the weekend release"
)
ROOT_ROWS = (200, 2_000)  # rows of a table without a foreign key, at scale 1.0
CHILD_ROWS = (3_000, 30_000)  # rows of a table with one
TOTAL_ROWS = (20_000, 100_000)  # all tables together, at scale 1.0
MIN_ROWS = 50
READ_CALLS = (5, 10, 20, 40, 80)
WRITE_CALLS = (20, 50, 100)


# --- the schema -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ForeignKey:
    """`column` references `parent (id)`; `skew` is the exponent k of
    `1 + floor(N * random() ^ k)` (the larger, the more children the first parents own);
    `nulls` the share of rows without a parent."""

    column: str
    parent: str
    skew: float
    nulls: float = 0.0


@dataclass(frozen=True)
class Category:
    """A text column with a few values; `shares` (descending, summing to 1) makes the first
    common and the last rare, the shape of a status column."""

    column: str
    values: tuple[str, ...]
    shares: tuple[float, ...]

    @property
    def common(self) -> str:
        return self.values[0]

    @property
    def rare(self) -> str:
        return self.values[-1]


TextKind = Literal["email", "name", "title", "note", "code"]


@dataclass(frozen=True)
class Text:
    """A text column: `email` (distinct per row, roots only), `name`, `title` (a phrase),
    `note` (mostly NULL) or `code` (a bounded `varchar(16)`, so an index may INCLUDE it)."""

    column: str
    kind: TextKind

    @property
    def type(self) -> str:
        return "varchar(16)" if self.kind == "code" else "text"


@dataclass(frozen=True)
class Table:
    """One generated table: its columns, how its data is drawn and how many rows it holds."""

    name: str
    singular: str
    rows: int
    foreign_keys: tuple[ForeignKey, ...]
    categories: tuple[Category, ...]
    time: str  # a timestamptz, within `days` before ANCHOR
    days: int
    recency: float  # exponent on random() for the age: above 1, recent rows are denser
    amount: str  # a numeric(12,2) in [0, amount_max], `amount_skew` the exponent
    amount_max: int
    amount_skew: float
    texts: tuple[Text, ...]
    ordered: bool  # rows written in `time` order (an append-only table)
    unique_email: bool

    @property
    def root(self) -> bool:
        return not self.foreign_keys

    def text(self, *kinds: TextKind) -> Text | None:
        return next((t for t in self.texts if t.kind in kinds), None)


@dataclass(frozen=True)
class View:
    """A view over the rows of `table` matching `where`; `barrier`: WITH (security_barrier)."""

    name: str
    table: str
    columns: tuple[str, ...]
    where: str
    barrier: bool


def _shares(rng: random.Random, count: int) -> tuple[float, ...]:
    """`count` descending shares summing to 1: geometric with a ratio of 0.1 to 0.45, so the
    first value holds 55 % to 90 % of the rows and the last can be well under 1 %."""
    ratio = rng.uniform(0.1, 0.45)
    weights = [ratio ** i for i in range(count)]
    return tuple(w / sum(weights) for w in weights)


def _tables(rng: random.Random, scale: float) -> tuple[Table, ...]:
    count = rng.randint(2, 6)
    names = rng.sample(TABLE_NAMES, count)
    rows: list[int] = []
    parents: list[list[int]] = []
    for i in range(count):
        # The first table is a root (no foreign key), the second a child of it; of the later
        # ones about a quarter are roots, the others children of one or two earlier tables.
        root = i == 0 or (i >= 2 and rng.random() < 0.25)
        if root:
            parents.append([])
            rows.append(rng.randint(*ROOT_ROWS))
        else:
            first = rng.randrange(i)
            others = [p for p in range(i) if p != first]
            second = [rng.choice(others)] if others and rng.random() < 0.35 else []
            parents.append([first, *second])
            rows.append(rng.randint(*CHILD_ROWS))
    total = sum(rows)
    fit = min(max(total, TOTAL_ROWS[0]), TOTAL_ROWS[1]) / total
    rows = [max(MIN_ROWS, round(n * (fit if parents[i] else 1.0) * scale))
            for i, n in enumerate(rows)]
    tables = []
    for i, (name, singular) in enumerate(names):
        keys = tuple(ForeignKey(f"{names[p][1]}_id", names[p][0],
                                rng.choice((1.5, 2.0, 3.0, 4.0)),
                                rng.choice((0.1, 0.3)) if rng.random() < 0.2 else 0.0)
                     for p in parents[i])
        categories = tuple(
            Category(column, values[:size], _shares(rng, size))
            for column, values in rng.sample(sorted(CATEGORIES.items()), rng.randint(1, 2))
            for size in [rng.randint(3, len(values))])
        if not keys:
            kinds: list[TextKind] = ["email", "name"]
        else:
            kinds = rng.sample(["title", "note", "code"], 2)
        texts = tuple(Text(kind if kind != "title" else rng.choice(("title", "subject")), kind)
                      for kind in kinds[:rng.randint(1, 2)])
        tables.append(Table(
            name, singular, rows[i], keys, categories, rng.choice(TIME_COLUMNS),
            rng.choice((30, 90, 365, 730)), rng.choice((1.0, 1.0, 2.0)),
            rng.choice(AMOUNT_COLUMNS), rng.choice((100, 5_000, 100_000)),
            rng.choice((1.0, 2.0, 3.0)), texts, rng.random() < 0.6,
            any(t.kind == "email" for t in texts) and rng.random() < 0.5))
    return tuple(tables)


def _views(rng: random.Random, tables: Sequence[Table]) -> tuple[View, ...]:
    """One plain view over the rows of a category's common value, and sometimes a
    security-barrier one hiding its rare value, each over the largest tables."""
    by_size = sorted(tables, key=lambda t: -t.rows)
    views = []
    plain = by_size[0]
    category = rng.choice(plain.categories)
    views.append(View(f"{category.common}_{plain.name}", plain.name, _view_columns(plain),
                      f"{category.column} = '{category.common}'", False))
    if rng.random() < 0.6:
        guarded = by_size[min(1, len(by_size) - 1)]
        category = rng.choice(guarded.categories)
        views.append(View(f"visible_{guarded.name}", guarded.name, _view_columns(guarded),
                          f"{category.column} <> '{category.rare}'", True))
    return tuple(views)


def _view_columns(table: Table) -> tuple[str, ...]:
    text = table.texts[0].column
    return ("id", *(k.column for k in table.foreign_keys), table.time, table.amount, text)


def _create_sql(table: Table) -> str:
    columns = ["id bigint GENERATED BY DEFAULT AS IDENTITY"]
    columns += [f"{k.column} bigint{'' if k.nulls else ' NOT NULL'}"
                for k in table.foreign_keys]
    columns += [f"{c.column} text NOT NULL" for c in table.categories]
    columns += [f"{table.time} timestamptz NOT NULL", f"{table.amount} numeric(12,2) NOT NULL"]
    columns += [f"{t.column} {t.type}" for t in table.texts]
    return f"CREATE TABLE {table.name} (\n  " + ",\n  ".join(columns) + "\n);\n"


def _text_expression(table: Table, text: Text) -> str:
    phrase = (f"substr('{LOREM}', 1 + floor(random() * 120)::int, "
              "12 + floor(random() * 48)::int)")
    return {
        "email": f"'{table.singular}' || g || '@example.com'",
        "name": f"initcap('{table.singular}') || ' ' || g",
        "title": phrase,
        "note": f"CASE WHEN random() < 0.9 THEN NULL ELSE {phrase} END",
        "code": "upper(substr(md5(random()::text), 1, 3)) || '-' || "
                "lpad(floor(random() * 1000000)::int::text, 6, '0')",
    }[text.kind]


def _data_sql(table: Table, rows: dict[str, int]) -> str:
    """One INSERT … SELECT over generate_series; every value from the session's random()."""
    expressions: list[tuple[str, str]] = []
    for key in table.foreign_keys:
        parent = f"1 + floor({rows[key.parent]} * random() ^ {key.skew})::bigint"
        if key.nulls:
            parent = f"CASE WHEN random() < {key.nulls} THEN NULL ELSE {parent} END"
        expressions.append((key.column, parent))
    for category in table.categories:
        values = ", ".join(f"'{v}'" for v in category.values)
        bounds = [0.0]
        for share in category.shares[:-1]:
            bounds.append(bounds[-1] + share)
        edges = ", ".join(f"{b:.6f}" for b in bounds)
        expressions.append((category.column, f"(ARRAY[{values}])"
                                              f"[width_bucket(random(), ARRAY[{edges}])]"))
    expressions.append((table.time, f"TIMESTAMPTZ '{ANCHOR}' - random() ^ {table.recency} "
                                    f"* interval '{table.days} days'"))
    expressions.append((table.amount, f"round((random() ^ {table.amount_skew} * "
                                      f"{table.amount_max})::numeric, 2)"))
    expressions += [(t.column, _text_expression(table, t)) for t in table.texts]
    names = ", ".join(column for column, _ in expressions)
    inner = ",\n         ".join(f"{expression} AS {column}" for column, expression in expressions)
    order = f"\nORDER BY {table.time}" if table.ordered else ""
    return (f"INSERT INTO {table.name} ({names})\nSELECT {names}\n"
            f"FROM (SELECT {inner}\n      FROM generate_series(1, {table.rows}) AS g) AS r"
            f"{order}")


def _keys_sql(table: Table) -> str:
    clauses = ["ADD PRIMARY KEY (id)"]
    email = table.text("email")
    if table.unique_email and email is not None:
        clauses.append(f"ADD UNIQUE ({email.column})")
    clauses += [f"ADD FOREIGN KEY ({k.column}) REFERENCES {k.parent} (id)"
                for k in table.foreign_keys]
    return f"ALTER TABLE {table.name} " + ", ".join(clauses)


def _view_sql(view: View) -> str:
    options = " WITH (security_barrier)" if view.barrier else ""
    return (f"CREATE VIEW {view.name}{options} AS SELECT {', '.join(view.columns)} "
            f"FROM {view.table} WHERE {view.where}")


# --- the statements ---------------------------------------------------------------------------

Draw = Literal["row", "rows", "range", "since", "id", "fixed"]


@dataclass(frozen=True)
class Param:
    """How the values of one or more `$n` are drawn from the loaded data:

    - `row`: the column's value in a random row, so common values come up as often as the data
      holds them (a foreign key's heavy parents most of all);
    - `rows`: `count` distinct such values (an `IN` list);
    - `range`: two values of the sorted column, `fraction` of the rows apart (`>= $a AND < $b`);
    - `since`: one value with about `fraction` of the rows above it (the recent rows);
    - `id`: an id, uniform over the table's (for single-row writes);
    - `fixed`: always `value`.
    """

    how: Draw
    table: str = ""
    column: str = ""
    count: int = 1
    fraction: float = 0.0
    value: Any = None

    @property
    def width(self) -> int:
        """How many `$n` it fills."""
        return self.count if self.how == "rows" else 2 if self.how == "range" else 1


@dataclass(frozen=True)
class Query:
    """One statement of the workload: `sql` with `$1…$n`, drawn by `params` in order, run
    `calls` times per mix."""

    name: str
    kind: str
    sql: str
    params: tuple[Param, ...]
    calls: int


@dataclass
class Sample:
    """The loaded data's values that parameters come from, read once after the load (so that
    running a mix sends the database nothing but the mix): each column a statement draws from,
    in id order (a random element has the data's skew) and sorted (for ranges), and each
    table's id range."""

    values: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    ordered: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    ids: dict[str, tuple[int, int]] = field(default_factory=dict)


def _bindable(value: Any) -> Any:
    """Every integer column here is a bigint: bound as int8, an integer parameter has one type
    whatever its value (psycopg would otherwise pick the smallest type that fits it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Int8(value)
    return value


def draw(param: Param, sample: Sample, rng: random.Random) -> tuple[Any, ...]:
    """The values `param` fills its `$n` with."""
    if param.how == "fixed":
        return (param.value,)
    if param.how == "id":
        low, high = sample.ids[param.table]
        return (Int8(rng.randint(low, high)),)
    key = (param.table, param.column)
    if param.how == "row":
        return (_bindable(rng.choice(sample.values[key])),)
    if param.how == "rows":
        picks: list[Any] = []
        for _ in range(param.count * 20):
            value = rng.choice(sample.values[key])
            if value not in picks:
                picks.append(value)
            if len(picks) == param.count:
                break
        picks += [picks[-1]] * (param.count - len(picks))  # fewer distinct values than $n
        return tuple(_bindable(v) for v in picks)
    ordered = sample.ordered[key]
    span = max(1, int(param.fraction * len(ordered)))
    if param.how == "range":
        start = rng.randrange(max(1, len(ordered) - span))
        end = min(start + span, len(ordered) - 1)
        return _bindable(ordered[start]), _bindable(ordered[end])
    start = max(0, len(ordered) - span - rng.randrange(max(1, span // 2)))
    return (_bindable(ordered[start]),)


Kind = Callable[["_Composer", Table], "Query | None"]


class _Composer:
    """Statements of each kind for a table (None when the table lacks what the kind needs)."""

    def __init__(self, rng: random.Random, tables: Sequence[Table],
                 views: Sequence[View]) -> None:
        self.rng = rng
        self.tables = {t.name: t for t in tables}
        self.views = {v.table: v for v in views if not v.barrier}
        self.guarded = {v.table: v for v in views if v.barrier}

    def query(self, kind: str, table: Table, sql: str, *params: Param,
              calls: Sequence[int] = READ_CALLS) -> Query:
        return Query(f"{kind}:{table.name}", kind, sql, params, self.rng.choice(calls))

    def key(self, table: Table) -> ForeignKey | None:
        return self.rng.choice(table.foreign_keys) if table.foreign_keys else None

    def category(self, table: Table) -> Category:
        return self.rng.choice(table.categories)

    def columns(self, table: Table) -> str:
        """What a read selects: everything, or a few columns."""
        if self.rng.random() < 0.3:
            return "*"
        return ", ".join(["id", table.time, table.amount][:self.rng.randint(2, 3)])

    # Equality on a foreign key, a category, a text.

    def fk_equal(self, t: Table) -> Query | None:
        key = self.key(t)
        if key is None:
            return None
        return self.query("fk_equal", t, f"SELECT {self.columns(t)} FROM {t.name} "
                          f"WHERE {key.column} = $1", Param("row", t.name, key.column))

    def category_equal(self, t: Table) -> Query:
        """A queue: the rows of a rare value, as a literal or a parameter (pg_stat_statements
        normalises both to `$1`)."""
        c = self.category(t)
        rare = self.rng.choice(c.values[1:])
        select = f"SELECT id, {t.time} FROM {t.name} WHERE {c.column} = "
        if self.rng.random() < 0.5:
            return self.query("category_equal", t, select + f"'{rare}'")
        return self.query("category_equal", t, select + "$1", Param("fixed", value=rare))

    def category_count(self, t: Table) -> Query:
        c = self.category(t)
        return self.query("category_count", t, f"SELECT count(*) FROM {t.name} "
                          f"WHERE {c.column} = $1", Param("row", t.name, c.column))

    def fk_category_count(self, t: Table) -> Query | None:
        key, c = self.key(t), self.category(t)
        if key is None:
            return None
        return self.query("fk_category_count", t, f"SELECT count(*) FROM {t.name} "
                          f"WHERE {key.column} = $1 AND {c.column} = $2",
                          Param("row", t.name, key.column), Param("row", t.name, c.column))

    def text_equal(self, t: Table) -> Query | None:
        text = t.text("email", "code")
        if text is None:
            return None
        return self.query("text_equal", t, f"SELECT id, {t.amount} FROM {t.name} "
                          f"WHERE {text.column} = $1", Param("row", t.name, text.column))

    # Ranges and IN lists.

    def time_range(self, t: Table) -> Query:
        fraction = self.rng.choice((0.002, 0.01, 0.03))
        return self.query("time_range", t, f"SELECT id, {t.amount} FROM {t.name} "
                          f"WHERE {t.time} >= $1 AND {t.time} < $2",
                          Param("range", t.name, t.time, fraction=fraction))

    def amount_range(self, t: Table) -> Query:
        fraction = self.rng.choice((0.001, 0.005, 0.02))
        return self.query("amount_range", t, f"SELECT id, {t.time}, {t.amount} FROM {t.name} "
                          f"WHERE {t.amount} BETWEEN $1 AND $2",
                          Param("range", t.name, t.amount, fraction=fraction))

    def in_list(self, t: Table) -> Query:
        key = self.key(t)
        if key is not None and self.rng.random() < 0.6:
            count = self.rng.randint(2, 5)
            marks = ", ".join(f"${n}" for n in range(1, count + 1))
            return self.query("in_list", t, f"SELECT id, {t.time} FROM {t.name} "
                              f"WHERE {key.column} IN ({marks})",
                              Param("rows", t.name, key.column, count=count))
        c = self.category(t)
        rare = ", ".join(f"'{v}'" for v in c.values[-2:])
        return self.query("in_list", t, f"SELECT id, {c.column}, {t.amount} FROM {t.name} "
                          f"WHERE {c.column} IN ({rare})")

    # ORDER BY … LIMIT: by a column, an ordinal, an alias.

    def fk_latest(self, t: Table) -> Query | None:
        key = self.key(t)
        if key is None:
            return None
        return self.query("fk_latest", t, f"SELECT id, {t.time}, {t.amount} FROM {t.name} "
                          f"WHERE {key.column} = $1 ORDER BY {t.time} DESC LIMIT 20",
                          Param("row", t.name, key.column))

    def top_ordinal(self, t: Table) -> Query:
        c = self.category(t)
        if self.rng.random() < 0.5:
            return self.query("top_ordinal", t, f"SELECT {t.time}, id FROM {t.name} "
                              "ORDER BY 1 DESC LIMIT 20")
        return self.query("top_ordinal", t, f"SELECT {t.amount}, id FROM {t.name} "
                          f"WHERE {c.column} = $1 ORDER BY 1 DESC LIMIT 10",
                          Param("row", t.name, c.column))

    def top_alias(self, t: Table) -> Query | None:
        key = self.key(t)
        if key is None:
            return None
        return self.query("top_alias", t, f"SELECT id, {t.amount} AS value FROM {t.name} "
                          f"WHERE {key.column} = $1 ORDER BY value DESC LIMIT 5",
                          Param("row", t.name, key.column))

    # Joins between a parent and its children.

    def join_child(self, t: Table) -> Query | None:
        key = self.key(t)
        if key is None:
            return None
        parent = self.tables[key.parent]
        shown = parent.texts[0].column
        c = self.category(t)
        return self.query("join_child", t,
                          f"SELECT c.id, c.{t.amount}, p.{shown} FROM {t.name} c "
                          f"JOIN {parent.name} p ON p.id = c.{key.column} "
                          f"WHERE c.{key.column} = $1 AND c.{c.column} = $2",
                          Param("row", t.name, key.column), Param("row", t.name, c.column))

    def join_parent_filter(self, t: Table) -> Query | None:
        key = self.key(t)
        if key is None:
            return None
        parent = self.tables[key.parent]
        pc = self.category(parent)
        rare = self.rng.choice(pc.values[1:])
        return self.query("join_parent_filter", t,
                          f"SELECT p.id, c.id, c.{t.time} FROM {parent.name} p "
                          f"JOIN {t.name} c ON c.{key.column} = p.id "
                          f"WHERE p.{pc.column} = $1 AND c.{t.time} >= $2 "
                          f"ORDER BY c.{t.time} DESC LIMIT 50",
                          Param("fixed", value=rare),
                          Param("since", t.name, t.time, fraction=0.05))

    # Through the views.

    def view_fk(self, t: Table) -> Query | None:
        view, key = self.views.get(t.name), self.key(t)
        if view is None or key is None:
            return None
        return self.query("view_fk", t, f"SELECT id, {t.amount} FROM {view.name} "
                          f"WHERE {key.column} = $1 ORDER BY {t.time} DESC LIMIT 20",
                          Param("row", t.name, key.column))

    def view_count(self, t: Table) -> Query | None:
        view = self.guarded.get(t.name) or self.views.get(t.name)
        if view is None:
            return None
        return self.query("view_count", t, f"SELECT count(*) FROM {view.name} "
                          f"WHERE {t.time} >= $1",
                          Param("since", t.name, t.time, fraction=0.02))

    # Aggregates.

    def group_by_category(self, t: Table) -> Query | None:
        key, c = self.key(t), self.category(t)
        if key is None:
            return None
        return self.query("group_by_category", t,
                          f"SELECT {c.column}, count(*), sum({t.amount}) FROM {t.name} "
                          f"WHERE {key.column} = $1 GROUP BY {c.column}",
                          Param("row", t.name, key.column))

    def group_by_fk(self, t: Table) -> Query | None:
        key = self.key(t)
        if key is None:
            return None
        return self.query("group_by_fk", t,
                          f"SELECT {key.column}, sum({t.amount}) AS value FROM {t.name} "
                          f"WHERE {t.time} >= $1 AND {t.time} < $2 "
                          f"GROUP BY {key.column} ORDER BY value DESC LIMIT 10",
                          Param("range", t.name, t.time, fraction=0.01))

    # Writes.

    def insert(self, t: Table) -> Query | None:
        """A new child row (roots may hold a unique e-mail, and new parents are rare)."""
        if t.root:
            return None
        columns: list[str] = []
        params: list[Param] = []
        for key in t.foreign_keys:
            columns.append(key.column)
            params.append(Param("row", t.name, key.column))
        for c in t.categories:
            columns.append(c.column)
            params.append(Param("fixed", value=c.values[1]))
        columns += [t.time, t.amount]
        params += [Param("since", t.name, t.time, fraction=0.001),
                   Param("row", t.name, t.amount)]
        for text in t.texts:
            columns.append(text.column)
            params.append(Param("fixed", value="NEW-000001" if text.kind == "code"
                                else "added by the workload"))
        marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        return self.query("insert", t, f"INSERT INTO {t.name} ({', '.join(columns)}) "
                          f"VALUES ({marks})", *params, calls=WRITE_CALLS)

    def update_category(self, t: Table) -> Query:
        c = self.category(t)
        return self.query("update_category", t, f"UPDATE {t.name} SET {c.column} = $1 "
                          "WHERE id = $2", Param("row", t.name, c.column),
                          Param("id", t.name), calls=WRITE_CALLS)

    def delete(self, t: Table) -> Query | None:
        """Only rows no foreign key references (a leaf table's)."""
        if any(k.parent == t.name for other in self.tables.values()
               for k in other.foreign_keys):
            return None
        return self.query("delete", t, f"DELETE FROM {t.name} WHERE id = $1",
                          Param("id", t.name), calls=WRITE_CALLS)


READ_KINDS: tuple[Kind, ...] = (
    _Composer.fk_equal, _Composer.category_equal, _Composer.category_count,
    _Composer.fk_category_count, _Composer.text_equal, _Composer.time_range,
    _Composer.amount_range, _Composer.in_list, _Composer.fk_latest, _Composer.top_ordinal,
    _Composer.top_alias, _Composer.join_child, _Composer.join_parent_filter,
    _Composer.group_by_category, _Composer.group_by_fk,
)
VIEW_KINDS: tuple[Kind, ...] = (_Composer.view_fk, _Composer.view_count)
WRITE_KINDS: tuple[Kind, ...] = (_Composer.insert, _Composer.update_category, _Composer.delete)


def _compose(rng: random.Random, composer: _Composer, tables: Sequence[Table],
             kinds: Sequence[Kind], wanted: int) -> tuple[Query, ...]:
    """`wanted` distinct statements, the kinds taken in turn, then at random; each on a table
    drawn by its rows (the larger tables, where an application spends its time; a view's
    kind among the tables with a view); a kind that fits no table after a few draws is
    passed over."""
    viewed = [t for t in tables if t.name in composer.views or t.name in composer.guarded]
    found: dict[str, Query] = {}
    for kind in [*kinds, *(rng.choice(kinds) for _ in range(wanted * 3))]:
        if len(found) >= wanted:
            break
        on = viewed if kind in VIEW_KINDS else tables
        if not on:
            continue
        for _attempt in range(6):
            made = kind(composer, rng.choices(on, [t.rows for t in on])[0])
            if made is not None and made.sql not in found:
                found[made.sql] = made
                break
    names: dict[str, int] = {}
    unique = []
    for query in found.values():  # the same kind on one table twice: name:table, name:table#2
        names[query.name] = names.get(query.name, 0) + 1
        suffix = f"#{names[query.name]}" if names[query.name] > 1 else ""
        unique.append(Query(query.name + suffix, query.kind, query.sql, query.params,
                            query.calls))
    return tuple(unique)


# --- the workload -----------------------------------------------------------------------------

Plan = list[tuple[Query, tuple[Any, ...]]]


@dataclass
class Workload:
    """A seed's schema and statements; `sample` (filled by `load`) holds the values their
    parameters are drawn from."""

    seed: int
    scale: float
    tables: tuple[Table, ...]
    views: tuple[View, ...]
    reads: tuple[Query, ...]
    writes: tuple[Query, ...]
    sample: Sample | None = None

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]

    def schema_sql(self) -> list[str]:
        """The tables, empty: the first step of `load`."""
        return [_create_sql(t) for t in self.tables]

    def data_sql(self) -> list[str]:
        rows = {t.name: t.rows for t in self.tables}
        return [_data_sql(t, rows) for t in self.tables]

    def keys_sql(self) -> list[str]:
        return [_keys_sql(t) for t in self.tables]

    def views_sql(self) -> list[str]:
        return [_view_sql(v) for v in self.views]

    def read_plan(self) -> Plan:
        """Every read `calls` times, with values drawn from the data, shuffled; the same list
        every time for a seed."""
        return self._plan(self.reads, "reads")

    def write_plan(self) -> Plan:
        """The writes likewise (ids uniform over each table's)."""
        return self._plan(self.writes, "writes")

    def examples(self, query: Query, count: int) -> list[tuple[Any, ...]]:
        """`count` value sets for `query`, from their own generator (tests compare plans with
        them)."""
        sample = self._sample()
        rng = random.Random(f"{self.seed}:examples:{query.name}")
        return [_values(query, sample, rng) for _ in range(count)]

    def _sample(self) -> Sample:
        if self.sample is None:
            raise GeneratedError("the workload has no sample values: load() it first")
        return self.sample

    def _plan(self, queries: Sequence[Query], purpose: str) -> Plan:
        sample = self._sample()
        rng = random.Random(f"{self.seed}:{purpose}")
        plan = [(q, _values(q, sample, rng)) for q in queries for _ in range(q.calls)]
        rng.shuffle(plan)
        return plan


def _values(query: Query, sample: Sample, rng: random.Random) -> tuple[Any, ...]:
    return tuple(v for p in query.params for v in draw(p, sample, rng))


def generate(seed: int, scale: float = 1.0) -> Workload:
    """The workload of `seed` (schema and statements; no database needed). `scale` multiplies
    every table's rows (1.0: 20,000 to 100,000 in all)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, not {scale!r}")
    rng = random.Random(seed)
    tables = _tables(rng, scale)
    views = _views(rng, tables)
    composer = _Composer(rng, tables, views)
    kinds = list(READ_KINDS)
    rng.shuffle(kinds)
    # The views first when there are some, so every view gets its statement.
    kinds = [*VIEW_KINDS, *kinds]
    reads = _compose(rng, composer, tables, kinds, rng.randint(5, 15))
    writes = _compose(rng, composer, tables, WRITE_KINDS, rng.randint(2, 4))
    return Workload(seed, scale, tables, views, reads, writes)


def _seed_value(seed: int) -> float:
    """setseed() takes a value in [-1, 1]; map any int seed onto it deterministically."""
    return random.Random(f"{seed}:setseed").uniform(-1.0, 1.0)


def load(conn: psycopg.Connection[Any], seed: int, scale: float = 1.0) -> Workload:
    """Create the workload of `seed` in the connected database: tables, data, keys, views, then
    VACUUM (ANALYZE); returns it with its sample values read.

    `conn` must be autocommit (VACUUM cannot run in a transaction). Everything but the VACUUM
    runs in one transaction, so a failed load leaves nothing behind. Raises GeneratedError when
    one of its tables already exists.
    """
    if not conn.autocommit:
        raise ValueError("generated.load needs an autocommit connection (it ends with VACUUM)")
    workload = generate(seed, scale)
    names = workload.table_names + [v.name for v in workload.views]
    existing = [row[0] for row in conn.execute(
        "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NOT NULL", [names])]
    if existing:
        raise GeneratedError(f"tables of seed {seed} already exist in database "
                             f"{conn.info.dbname!r}: {', '.join(existing)}")
    with conn.transaction():
        # Flushed at commit even on clusters that commit asynchronously: VACUUM marks no page
        # all-visible before the commit that wrote it is on disk (see hotdash.load).
        conn.execute("SET LOCAL synchronous_commit = on")
        for statement in workload.schema_sql():
            conn.execute(statement)
        conn.execute("SELECT setseed(%s)", [_seed_value(seed)])
        for statement in workload.data_sql():
            conn.execute(statement)
        for statement in workload.keys_sql() + workload.views_sql():
            conn.execute(statement)
    conn.execute(f"VACUUM (ANALYZE) {', '.join(workload.table_names)}")
    workload.sample = read_sample(conn, workload)
    return workload


def read_sample(conn: psycopg.Connection[Any], workload: Workload) -> Sample:
    """The values the statements' parameters are drawn from (the columns they name)."""
    sample = Sample()
    wanted = {(p.table, p.column) for q in (*workload.reads, *workload.writes)
              for p in q.params if p.column}
    for table, column in sorted(wanted):
        values = [row[0] for row in conn.execute(
            f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY id")]
        sample.values[(table, column)] = values
        sample.ordered[(table, column)] = sorted(values)
    for table in workload.table_names:
        row = conn.execute(f"SELECT min(id), max(id) FROM {table}").fetchone()
        if row is None or row[0] is None:
            raise GeneratedError(f"{table} is empty: no ids to draw")
        sample.ids[table] = (int(row[0]), int(row[1]))
    return sample


def reset_statistics(conn: psycopg.Connection[Any]) -> None:
    """Forget the load in the statistics views: pg_stat_statements (this database only) and the
    table counters then describe the workload alone. pg_stat_force_next_flush makes this
    backend flush its pending counters (the load's inserts) when it goes idle, which it does
    before it answers, so they are in before the reset, with no wait."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_reset()")
    conn.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                 "WHERE datname = current_database()), 0)")


def execute(conn: psycopg.Connection[Any], plan: Plan) -> list[float]:
    """Each statement of `plan` with server-side parameters (extended protocol; psycopg
    prepares a statement from its fifth execution, as an application's driver does), its rows
    fetched; the seconds each took. The caller ends any transaction."""
    # psycopg's `%s` form of each text, and which argument each placeholder takes (`$n` in
    # order here, but the mapping costs nothing and keeps any text correct).
    forms = {q.sql: to_client_sql(q.sql, range(sum(p.width for p in q.params)))
             for q, _ in plan}
    times = []
    for query, args in plan:
        text, order = forms[query.sql]
        started = time.perf_counter()
        cur = conn.execute(text, tuple(args[i] for i in order))
        if cur.description is not None:
            cur.fetchall()
        times.append(time.perf_counter() - started)
    return times


def run(conn: psycopg.Connection[Any], workload: Workload, reads: bool = True,
        writes: bool = True) -> float:
    """The read mix, then the write mix; returns the elapsed seconds. On an autocommit
    connection every write commits by itself; otherwise the mix is committed at the end."""
    plan = (workload.read_plan() if reads else []) + (workload.write_plan() if writes else [])
    seconds = sum(execute(conn, plan))
    if not conn.autocommit:
        conn.commit()
    return seconds


def describe(workload: Workload) -> dict[str, Any]:
    """The workload as plain data (for a bench's JSON, a test's failure message)."""
    return {
        "seed": workload.seed, "scale": workload.scale,
        "tables": {t.name: t.rows for t in workload.tables},
        "views": [_view_sql(v) for v in workload.views],
        "reads": {q.name: {"sql": q.sql, "calls": q.calls} for q in workload.reads},
        "writes": {q.name: {"sql": q.sql, "calls": q.calls} for q in workload.writes},
    }

