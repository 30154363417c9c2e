"""HotDash: the sample dashboard database the demo, the tests and the benchmarks use.

A Supabase-style application database (an `auth` schema with `auth.uid()`, a NOLOGIN role
`authenticated`, row level security) with a skewed user population, generated in SQL from the
description in the project's HotDash README, plus the dashboard's workload: the nine tile loaders
and three writes, sent the way the application sends them (extended protocol, `$n` parameters).

Conventions worth knowing when coding against it:

- users are numbered `n = 0 .. N-1` (`profiles.n`), with `profiles.id = md5('u' || n)::uuid`;
  user 0 is the heaviest (`floor(N * random()^3)` puts the most rows on the smallest n);
- products are numbered `0 .. P-1` (`products.id`), product 0 the busiest;
- `scale` multiplies every table's row count: N = max(50, round(5000 * scale)),
  P = max(20, round(2000 * scale)), 200,000 * scale notifications, decision_log and
  inventory_actions rows, 150,000 * scale sales_pulse_actions rows, one user_preferences row per
  user;
- only primary keys and unique constraints exist after `load`; foreign keys are declared (they
  create no index), and finding the indexes the workload needs is the advisor's job.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.numeric import Int4, Int8

USERS = 5000
PRODUCTS = 2000
MIN_USERS = 50
MIN_PRODUCTS = 20

# Tables in load order; the row count of each at scale 1.0 (None: derived from users).
TABLES: tuple[str, ...] = (
    "profiles",
    "products",
    "notifications",
    "decision_log",
    "inventory_actions",
    "user_preferences",
    "sales_pulse_actions",
)
ROWS_AT_FULL_SCALE = {
    "notifications": 200_000,
    "decision_log": 200_000,
    "inventory_actions": 200_000,
    "sales_pulse_actions": 150_000,
}


class HotDashError(RuntimeError):
    """The sample could not be loaded (for instance: its tables already exist)."""


# --- schema -----------------------------------------------------------------------------------

_AUTH_SQL = """\
-- On Supabase `auth` and auth.uid() exist already (not ours to replace): made only if missing.
DO $$
BEGIN
  IF to_regnamespace('auth') IS NULL THEN
    CREATE SCHEMA auth;
  END IF;
  IF to_regprocedure('auth.uid()') IS NULL THEN
    CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
      AS $f$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $f$;
  END IF;
END
$$;

-- Roles are cluster-wide: another database of this cluster may already have created it.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;  -- created concurrently by a load into another database
END
$$;
"""

# Keys come after the data (_KEYS_SQL): building an index once is faster than growing it row by
# row, and a foreign key added afterwards is checked with one join instead of a trigger per row.
_TABLES_SQL = """\
CREATE TABLE profiles (
  id uuid NOT NULL,  -- primary key
  n int,  -- unique
  email text
);

CREATE TABLE products (
  id int NOT NULL,  -- primary key
  sku text
);

CREATE TABLE notifications (
  id bigserial,  -- primary key
  user_id uuid NOT NULL,  -- references profiles
  read boolean NOT NULL DEFAULT false,
  kind text NOT NULL,
  body text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE decision_log (
  id bigserial,  -- primary key
  user_id uuid NOT NULL,  -- references profiles
  status text NOT NULL,
  decision_type text NOT NULL,
  amount numeric(12,2),
  payload jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inventory_actions (
  id bigserial,  -- primary key
  product_id int NOT NULL,  -- references products
  user_id uuid,  -- references profiles
  action text NOT NULL,
  qty int NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_preferences (
  id bigserial,  -- primary key
  user_id uuid NOT NULL,  -- references profiles; no index yet: it should become a unique index
  theme text,
  prefs jsonb,
  updated_at timestamptz
);

CREATE TABLE sales_pulse_actions (
  id bigserial,  -- primary key
  user_id uuid,  -- references profiles
  action text NOT NULL,
  amount numeric(12,2),
  created_at timestamptz NOT NULL
);
"""

# The only indexes of the sample: primary keys and profiles.n's unique constraint.
_KEYS_SQL = """\
ALTER TABLE profiles ADD PRIMARY KEY (id), ADD UNIQUE (n);
ALTER TABLE products ADD PRIMARY KEY (id);
ALTER TABLE notifications ADD PRIMARY KEY (id),
  ADD FOREIGN KEY (user_id) REFERENCES profiles (id);
ALTER TABLE decision_log ADD PRIMARY KEY (id),
  ADD FOREIGN KEY (user_id) REFERENCES profiles (id);
ALTER TABLE inventory_actions ADD PRIMARY KEY (id),
  ADD FOREIGN KEY (product_id) REFERENCES products (id),
  ADD FOREIGN KEY (user_id) REFERENCES profiles (id);
ALTER TABLE user_preferences ADD PRIMARY KEY (id),
  ADD FOREIGN KEY (user_id) REFERENCES profiles (id);
ALTER TABLE sales_pulse_actions ADD PRIMARY KEY (id),
  ADD FOREIGN KEY (user_id) REFERENCES profiles (id);
"""

_SECURITY_SQL = """\
ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
CREATE POLICY notifications_select_own ON notifications
  FOR SELECT TO authenticated USING (user_id = auth.uid());

ALTER TABLE decision_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY decision_log_own ON decision_log
  TO authenticated USING (user_id = (SELECT auth.uid()));

GRANT USAGE ON SCHEMA auth TO authenticated;
GRANT SELECT ON profiles, products, notifications, decision_log, inventory_actions,
  user_preferences, sales_pulse_actions TO authenticated;
"""

SCHEMA_SQL: str = "\n".join((_AUTH_SQL, _TABLES_SQL, _KEYS_SQL, _SECURITY_SQL))

# --- data -------------------------------------------------------------------------------------
# Every statement draws from the session's random() (seeded with setseed) row by row; the rows
# of the event tables are inserted in created_at order, as an application would have written them.
# Placeholders: %(users)s = N, %(products)s = P, %(rows)s = this table's row count, %(text)s =
# BODY_TEXT (bodies are 40-120 characters cut from it at a random offset). User n's id is
# md5('u' || n)::uuid, taken from an array of the ids ordered by n (cheaper than md5 per row).

BODY_TEXT = (
    "Heads up: three approvals are waiting for you, two teammates mentioned you in the pricing "
    "thread, the nightly inventory sync finished with warnings about stale stock counts, and "
    "your weekly digest is ready to read."
)

_WITH_USERS = "WITH users AS (SELECT array_agg(id ORDER BY n) AS ids FROM profiles)"

_DATA_SQL: dict[str, str] = {
    "profiles": """
INSERT INTO profiles (id, n, email)
SELECT md5('u' || n)::uuid, n, 'user' || n || '@hotdash.example'
FROM generate_series(0, %(users)s::int - 1) AS n
""",
    "products": """
INSERT INTO products (id, sku)
SELECT id, 'SKU-' || lpad(id::text, 5, '0')
FROM generate_series(0, %(products)s::int - 1) AS id
""",
    "notifications": _WITH_USERS + """
INSERT INTO notifications (user_id, read, kind, body, created_at)
SELECT user_id, read, kind, body, created_at
FROM (
  SELECT (SELECT ids FROM users)[1 + floor(%(users)s::int * (random() ^ 3))::int] AS user_id,
         random() < 0.85 AS read,
         (ARRAY['mention', 'approval', 'system', 'digest'])[1 + floor(random() * 4)::int] AS kind,
         substr(%(text)s::text, 1 + floor(random() * 80)::int,
                40 + floor(random() * 81)::int) AS body,
         now() - random() * interval '180 days' AS created_at
  FROM generate_series(1, %(rows)s::int)
) AS g
ORDER BY created_at
""",
    "decision_log": _WITH_USERS + """
INSERT INTO decision_log (user_id, status, decision_type, amount, payload, created_at)
SELECT user_id,
       CASE WHEN s < 0.02 THEN 'pending'
            WHEN s < 0.72 THEN 'approved'
            WHEN s < 0.92 THEN 'rejected'
            ELSE 'escalated' END,
       decision_type, amount,
       jsonb_build_object('ticket', 'T-' || ticket, 'channel', channel, 'auto', s2 < 0.3),
       created_at
FROM (
  SELECT (SELECT ids FROM users)[1 + floor(%(users)s::int * (random() ^ 3))::int] AS user_id,
         random() AS s,
         (ARRAY['refund', 'credit', 'discount', 'chargeback', 'write_off', 'exception'])
           [1 + floor(random() * 6)::int] AS decision_type,
         round((random() * 5000)::numeric, 2) AS amount,
         floor(random() * 1000000)::int AS ticket,
         (ARRAY['email', 'chat', 'phone', 'api'])[1 + floor(random() * 4)::int] AS channel,
         random() AS s2,
         now() - random() * interval '365 days' AS created_at
  FROM generate_series(1, %(rows)s::int)
) AS g
ORDER BY created_at
""",
    "inventory_actions": _WITH_USERS + """
INSERT INTO inventory_actions (product_id, user_id, action, qty, created_at)
SELECT product_id, user_id, action, qty, created_at
FROM (
  SELECT floor(%(products)s::int * (random() ^ 2))::int AS product_id,
         (SELECT ids FROM users)[1 + floor(%(users)s::int * random())::int] AS user_id,
         (ARRAY['restock', 'sale', 'adjust', 'return'])[1 + floor(random() * 4)::int] AS action,
         1 + floor(random() * 20)::int AS qty,
         now() - random() * interval '365 days' AS created_at
  FROM generate_series(1, %(rows)s::int)
) AS g
ORDER BY created_at
""",
    "user_preferences": """
INSERT INTO user_preferences (user_id, theme, prefs, updated_at)
SELECT id,
       (ARRAY['light', 'dark', 'system'])[1 + floor(random() * 3)::int],
       jsonb_build_object(
         'digest', (ARRAY['daily', 'weekly', 'never'])[1 + floor(random() * 3)::int],
         'timezone', (ARRAY['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Tokyo'])
                       [1 + floor(random() * 4)::int],
         'compact', random() < 0.5),
       now() - random() * interval '90 days'
FROM profiles
ORDER BY n
""",
    "sales_pulse_actions": _WITH_USERS + """
INSERT INTO sales_pulse_actions (user_id, action, amount, created_at)
SELECT user_id, action, amount, created_at
FROM (
  SELECT (SELECT ids FROM users)[1 + floor(%(users)s::int * random())::int] AS user_id,
         (ARRAY['call', 'email', 'meeting', 'demo', 'deal_won', 'deal_lost'])
           [1 + floor(random() * 6)::int] AS action,
         round((random() * 10000)::numeric, 2) AS amount,
         now() - random() * interval '90 days' AS created_at
  FROM generate_series(1, %(rows)s::int)
) AS g
ORDER BY created_at
""",
}


def sizes(scale: float = 1.0) -> dict[str, int]:
    """The row count of every table at `scale` (what `load` inserts)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, not {scale!r}")
    users = max(MIN_USERS, round(USERS * scale))
    counts = {"profiles": users, "products": max(MIN_PRODUCTS, round(PRODUCTS * scale))}
    counts.update({table: max(1, round(rows * scale))
                   for table, rows in ROWS_AT_FULL_SCALE.items()})
    counts["user_preferences"] = users
    return {table: counts[table] for table in TABLES}


def _seed_value(seed: int) -> float:
    """setseed() takes a value in [-1, 1]; map any int seed onto it deterministically."""
    return random.Random(seed).uniform(-1.0, 1.0)


def load(conn: psycopg.Connection[Any], scale: float = 1.0, seed: int = 42) -> dict[str, int]:
    """Create the HotDash schema and data in the connected database; returns table -> row count.

    `conn` must be an autocommit connection (the load ends with VACUUM ANALYZE) with the right to
    create schemas and (if `authenticated` does not exist yet) roles. Everything but the VACUUM
    runs in one transaction, so a failed load leaves nothing behind. Raises HotDashError when any
    HotDash table already exists in this database.
    """
    if not conn.autocommit:
        raise ValueError("hotdash.load needs an autocommit connection (it ends with VACUUM)")
    counts = sizes(scale)
    existing = [row[0] for row in conn.execute(
        "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NOT NULL",
        [list(TABLES)])]
    if existing:
        dbname = conn.info.dbname
        raise HotDashError(f"HotDash tables already exist in database {dbname!r}: "
                           f"{', '.join(existing)}; load the sample into an empty database")
    inserted: dict[str, int] = {}
    with conn.transaction():
        # Flushed at commit even where commits are asynchronous (throwaway clusters): VACUUM
        # marks no page all-visible before the commit that wrote it is on disk, and without a
        # visibility map there are no index-only scans until autovacuum comes by.
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute(_AUTH_SQL)
        conn.execute(_TABLES_SQL)
        conn.execute("SELECT setseed(%s)", [_seed_value(seed)])
        for table in TABLES:
            params = {"users": counts["profiles"], "products": counts["products"],
                      "rows": counts[table], "text": BODY_TEXT}
            cur = conn.execute(_DATA_SQL[table], params)
            inserted[table] = cur.rowcount
        conn.execute(_KEYS_SQL)
        conn.execute(_SECURITY_SQL)
    conn.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")
    return inserted


# --- workload ---------------------------------------------------------------------------------

ParamKind = str  # "user", "product" or "notification_id"


@dataclass(frozen=True)
class TileQuery:
    """One statement of the workload, as the application sends it (`$n` parameters).

    `params` names what each `$n` is, so the workload can pick values: "user" (a profiles.id,
    skewed like the data), "product" (a products.id, skewed like the data) or "notification_id".
    """

    name: str
    sql: str
    weight: int
    params: tuple[ParamKind, ...] = ()


TILES: tuple[TileQuery, ...] = (
    TileQuery("notifications_unread_latest",
              "SELECT * FROM notifications WHERE user_id = $1 AND read = false "
              "ORDER BY created_at DESC LIMIT 20", 400, ("user",)),
    TileQuery("notifications_unread_count",
              "SELECT count(*) FROM notifications WHERE user_id = $1 AND read = false",
              400, ("user",)),
    TileQuery("decisions_pending_mine",
              "SELECT * FROM decision_log WHERE user_id = $1 AND status = 'pending' "
              "ORDER BY created_at DESC LIMIT 50", 60, ("user",)),
    TileQuery("decisions_pending_count",
              "SELECT count(*) FROM decision_log WHERE status = 'pending'", 40),
    TileQuery("inventory_product_latest",
              "SELECT * FROM inventory_actions WHERE product_id = $1 "
              "ORDER BY created_at DESC LIMIT 20", 100, ("product",)),
    TileQuery("inventory_week_totals",
              "SELECT product_id, sum(qty) FROM inventory_actions "
              "WHERE created_at >= now() - interval '7 days' GROUP BY product_id", 10),
    TileQuery("decisions_pending_queue",
              "SELECT d.id, d.status, p.email FROM decision_log d "
              "JOIN profiles p ON p.id = d.user_id WHERE d.status = 'pending' "
              "ORDER BY d.created_at LIMIT 100", 20),
    TileQuery("user_preferences",
              "SELECT theme, prefs FROM user_preferences WHERE user_id = $1", 200, ("user",)),
    TileQuery("sales_pulse_latest",
              "SELECT * FROM sales_pulse_actions ORDER BY created_at DESC LIMIT 20", 60),
)

WRITES: tuple[TileQuery, ...] = (
    TileQuery("notification_insert",
              "INSERT INTO notifications (user_id, kind, body) VALUES ($1, 'system', 'hello')",
              300, ("user",)),
    TileQuery("notification_toggle_read",
              "UPDATE notifications SET read = NOT read WHERE id = $1",
              300, ("notification_id",)),
    TileQuery("decision_insert",
              "INSERT INTO decision_log (user_id, status, decision_type) "
              "VALUES ($1, 'pending', 'refund')", 300, ("user",)),
)

Plan = list[tuple[str, tuple[Any, ...]]]


class _Picker:
    """Parameter values with the data's skew, from one seeded generator."""

    def __init__(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng
        self._users: list[Any] | None = None
        self._products: list[int] | None = None
        self._notifications: tuple[int, int] | None = None

    def pick(self, kind: ParamKind) -> Any:
        if kind == "user":
            if self._users is None:
                self._users = [r[0] for r in self.conn.execute(
                    "SELECT id FROM profiles ORDER BY n")]
            return self._users[int(len(self._users) * self.rng.random() ** 3)]
        if kind == "product":
            if self._products is None:
                self._products = [r[0] for r in self.conn.execute(
                    "SELECT id FROM products ORDER BY id")]
            index = min(int(len(self._products) * self.rng.random() ** 2),
                        len(self._products) - 1)
            return Int4(self._products[index])
        if kind == "notification_id":
            if self._notifications is None:
                row = self.conn.execute("SELECT min(id), max(id) FROM notifications").fetchone()
                if row is None or row[0] is None:
                    raise HotDashError("notifications is empty: no ids to update")
                self._notifications = (int(row[0]), int(row[1]))
            return Int8(self.rng.randint(*self._notifications))
        raise ValueError(f"unknown parameter kind {kind!r}")


def _counts(queries: Sequence[TileQuery], scale_weights: float,
            total: int | None) -> list[int]:
    """How many times each query runs: weight * scale_weights (at least 1), or, given `total`,
    the weights apportioned to sum to `total` (largest remainders; each at least 1)."""
    if total is None:
        return [max(1, round(q.weight * scale_weights)) for q in queries]
    if total < len(queries):
        raise ValueError(f"reads must be at least {len(queries)} (one per tile), not {total}")
    weight_sum = sum(q.weight for q in queries)
    quotas = [q.weight * total / weight_sum for q in queries]
    counts = [max(1, int(quota)) for quota in quotas]
    by_remainder = sorted(range(len(queries)), key=lambda i: quotas[i] - int(quotas[i]),
                          reverse=True)
    i = 0
    while sum(counts) < total:
        counts[by_remainder[i % len(counts)]] += 1
        i += 1
    while sum(counts) > total:  # only when the at-least-one rule overshot
        largest = max(range(len(counts)), key=lambda k: counts[k])
        counts[largest] -= 1
    return counts


def _plan(conn: psycopg.Connection[Any], queries: Sequence[TileQuery], seed: int,
          scale_weights: float, total: int | None) -> Plan:
    rng = random.Random(seed)
    picker = _Picker(conn, rng)
    order = [q for q, n in zip(queries, _counts(queries, scale_weights, total), strict=True)
             for _ in range(n)]
    rng.shuffle(order)
    return [(q.sql, tuple(picker.pick(kind) for kind in q.params)) for q in order]


def workload_plan(conn: psycopg.Connection[Any], seed: int = 7, reads: int | None = None,
                  scale_weights: float = 1.0) -> Plan:
    """The read mix as a fixed-seed, shuffled list of (sql, params); same seed, same list.

    Each tile runs weight * scale_weights times (at least once); `reads`, when given, is the
    total instead (the weights apportioned to it). Users are `users[int(N * random() ** 3)]`
    ordered by profiles.n, products `int(P * random() ** 2)` (clamped to the existing ids), so
    the workload has the data's skew. The database is only read to learn the ids.
    """
    return _plan(conn, TILES, seed, scale_weights, reads)


def write_plan(conn: psycopg.Connection[Any], seed: int = 11,
               scale_weights: float = 1.0) -> Plan:
    """The write mix (WRITES, 300 each times scale_weights, at least once), shuffled like
    `workload_plan`; notification ids are uniform over the existing id range."""
    return _plan(conn, WRITES, seed, scale_weights, None)


_DOLLAR_PARAM = re.compile(r"\$(\d+)")


def _client_form(sql: str) -> tuple[str, tuple[int, ...]]:
    """`$n` statement -> psycopg `%s` text and, per placeholder, the index of its argument."""
    order: list[int] = []

    def placeholder(match: re.Match[str]) -> str:
        order.append(int(match.group(1)) - 1)
        return "%s"

    return _DOLLAR_PARAM.sub(placeholder, sql.replace("%", "%%")), tuple(order)


def to_client_sql(sql: str, params: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """`$n` statement and its arguments -> psycopg's `%s` form and the matching arguments.

    psycopg binds `%s` server-side as `$1, $2, ...` in order, so the server (and
    pg_stat_statements) sees the `$n` text the application sends.
    """
    text, order = _client_form(sql)
    return text, tuple(params[i] for i in order)


def run(conn: psycopg.Connection[Any], plan: Sequence[tuple[str, Sequence[Any]]]) -> float:
    """Execute every statement of `plan` with server-side parameters (extended protocol) and
    fetch its rows; returns the elapsed seconds. On an autocommit connection every write
    commits by itself; otherwise the plan is committed at the end."""
    forms: dict[str, tuple[str, tuple[int, ...]]] = {}
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for sql, params in plan:
        if sql not in forms:
            forms[sql] = _client_form(sql)
        text, order = forms[sql]
        statements.append((text, tuple(params[i] for i in order)))
    start = time.perf_counter()
    for text, args in statements:
        cur = conn.execute(text, args)
        if cur.description is not None:
            cur.fetchall()
    if not conn.autocommit:
        conn.commit()
    return time.perf_counter() - start


def reset_statistics(conn: psycopg.Connection) -> None:
    """Forget the load in the statistics views, as a database in steady use would have:
    pg_stat_statements and the table counters then describe the workload only."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_sleep(0.05)")  # the flush happens when this backend goes idle
    conn.execute("SELECT pg_stat_reset()")
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
                    ).fetchone():
        conn.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database "
                     "WHERE datname = current_database()), 0)")  # this database only


def watched_queries_toml() -> str:
    """The tile loaders as a HOTDATA_WATCHED_QUERIES file: literal texts keep the constants
    (`read = false`, `status = 'pending'`) that pg_stat_statements replaces by `$n`."""
    entries = []
    for tile in TILES:
        entries.append(f"[[query]]\nname = {json.dumps(tile.name)}\n"
                       f"sql = {json.dumps(tile.sql)}\n")
    return "\n".join(entries)
