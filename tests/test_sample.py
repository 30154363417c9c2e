"""The HotDash sample database and its workload, against a real PostgreSQL."""

from __future__ import annotations

import hashlib
import itertools
import statistics
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pglast
import psycopg
import pytest

from bot import pgcluster
from bot.sample import hotdash

SCALE = 0.05
COUNT_TILE = "SELECT count(*) FROM notifications WHERE user_id = $1 AND read = false"


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a fresh database holding HotDash at SCALE."""
    with psycopg.connect(database, autocommit=True) as connection:
        hotdash.load(connection, scale=SCALE)
        yield connection


def scalar(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def user_id(n: int) -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(f"u{n}".encode()).hexdigest())


def test_load_creates_every_table_with_counts_proportional_to_scale(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        counts = hotdash.load(conn, scale=SCALE)
        expected = {"profiles": 250, "products": 100, "notifications": 10_000,
                    "decision_log": 10_000, "inventory_actions": 10_000,
                    "user_preferences": 250, "sales_pulse_actions": 7_500}
        assert counts == expected
        for table, rows in expected.items():
            assert scalar(conn, f"SELECT count(*) FROM {table}") == rows
        # users are n = 0 .. N-1 with id = md5('u' || n)::uuid; products are 0 .. P-1
        assert scalar(conn, "SELECT min(n)::text || '..' || max(n) FROM profiles") == "0..249"
        assert scalar(conn, "SELECT count(*) FROM profiles WHERE id <> md5('u' || n)::uuid") == 0
        assert scalar(conn, "SELECT id FROM profiles WHERE n = 7") == user_id(7)
        assert scalar(conn, "SELECT min(id)::text || '..' || max(id) FROM products") == "0..99"
        # one preferences row per user
        assert scalar(conn, "SELECT count(DISTINCT user_id) FROM user_preferences") == 250
        # VACUUM ANALYZE ran: the planner has statistics
        assert scalar(conn, "SELECT reltuples FROM pg_class WHERE relname = 'notifications'") \
            == 10_000


def test_scale_floors_and_full_size() -> None:
    assert hotdash.sizes(1.0) == {
        "profiles": 5000, "products": 2000, "notifications": 200_000, "decision_log": 200_000,
        "inventory_actions": 200_000, "user_preferences": 5000, "sales_pulse_actions": 150_000}
    tiny = hotdash.sizes(0.001)
    assert (tiny["profiles"], tiny["products"], tiny["user_preferences"]) == (50, 20, 50)
    assert tiny["notifications"] == 200
    with pytest.raises(ValueError, match="scale"):
        hotdash.sizes(0)


def test_a_few_heavy_users_own_most_rows(conn: psycopg.Connection[Any]) -> None:
    per_user = conn.execute(
        "SELECT p.n, count(x.id) FROM profiles p LEFT JOIN notifications x ON x.user_id = p.id "
        "GROUP BY p.n ORDER BY count(x.id) DESC, p.n").fetchall()
    top_n, top = per_user[0]
    median = statistics.median(count for _, count in per_user)
    assert top_n == 0
    assert top >= 20 * median, (top, median)
    decisions_of_user_0 = scalar(
        conn, "SELECT count(*) FROM decision_log WHERE user_id = %s", [user_id(0)])
    assert decisions_of_user_0 > 0.1 * 10_000  # floor(N * random()^3) = 0 for ~16 % of rows
    # products are skewed too: floor(P * random()^2)
    product_0 = scalar(conn, "SELECT count(*) FROM inventory_actions WHERE product_id = 0")
    product_99 = scalar(conn, "SELECT count(*) FROM inventory_actions WHERE product_id = 99")
    assert product_0 > 5 * product_99


def test_value_distributions_follow_the_readme(conn: psycopg.Connection[Any]) -> None:
    pending = scalar(conn, "SELECT avg((status = 'pending')::int) FROM decision_log")
    assert 0.01 < pending < 0.03
    shares = dict(conn.execute(
        "SELECT status, count(*)::float / sum(count(*)) OVER () FROM decision_log "
        "GROUP BY status").fetchall())
    assert set(shares) == {"pending", "approved", "rejected", "escalated"}
    assert 0.67 < shares["approved"] < 0.73 and 0.18 < shares["rejected"] < 0.22
    assert 0.06 < shares["escalated"] < 0.10
    assert scalar(conn, "SELECT count(DISTINCT decision_type) FROM decision_log") == 6
    assert 0.83 < scalar(conn, "SELECT avg(read::int) FROM notifications") < 0.87
    kinds = {r[0] for r in conn.execute("SELECT DISTINCT kind FROM notifications")}
    assert kinds == {"mention", "approval", "system", "digest"}
    assert conn.execute("SELECT min(length(body)), max(length(body)) FROM notifications") \
        .fetchone() == (40, 120)
    actions = {r[0] for r in conn.execute("SELECT DISTINCT action FROM inventory_actions")}
    assert actions == {"restock", "sale", "adjust", "return"}
    assert conn.execute("SELECT min(qty), max(qty) FROM inventory_actions").fetchone() == (1, 20)
    for table, days in (("notifications", 180), ("decision_log", 365),
                        ("inventory_actions", 365), ("sales_pulse_actions", 90)):
        age_days = conn.execute(
            f"SELECT extract(epoch FROM now() - min(created_at)) / 86400, "
            f"extract(epoch FROM now() - max(created_at)) / 86400 FROM {table}").fetchone()
        assert age_days is not None
        oldest, newest = (float(v) for v in age_days)
        assert days - 2 < oldest <= days + 0.1, (table, oldest)
        assert newest < 1, (table, newest)


def test_rls_shows_a_user_only_their_own_rows(conn: psycopg.Connection[Any]) -> None:
    someone = user_id(3)
    own_notifications = scalar(
        conn, "SELECT count(*) FROM notifications WHERE user_id = %s", [someone])
    own_decisions = scalar(conn, "SELECT count(*) FROM decision_log WHERE user_id = %s", [someone])
    assert own_notifications > 0 and own_decisions > 0
    assert scalar(conn, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'authenticated'") \
        is False
    policies = dict(conn.execute(
        "SELECT tablename, cmd FROM pg_policies WHERE 'authenticated' = ANY(roles)").fetchall())
    assert policies == {"notifications": "SELECT", "decision_log": "ALL"}

    with conn.transaction():
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(someone)])
        assert scalar(conn, "SELECT auth.uid()") == someone
        seen = conn.execute(
            "SELECT user_id, count(*) FROM notifications GROUP BY user_id").fetchall()
        assert seen == [(someone, own_notifications)]
        seen = conn.execute(
            "SELECT user_id, count(*) FROM decision_log GROUP BY user_id").fetchall()
        assert seen == [(someone, own_decisions)]
        # tables without RLS are readable in full
        assert scalar(conn, "SELECT count(*) FROM profiles") == 250

    with conn.transaction():
        conn.execute("SET LOCAL ROLE authenticated")
        assert scalar(conn, "SELECT auth.uid()") is None
        assert scalar(conn, "SELECT count(*) FROM notifications") == 0
        assert scalar(conn, "SELECT count(*) FROM decision_log") == 0
        assert scalar(conn, "SELECT count(*) FROM user_preferences") == 250


def test_only_primary_keys_and_unique_constraints_exist(conn: psycopg.Connection[Any]) -> None:
    indexes = conn.execute(
        "SELECT c.relname, con.contype, "
        "       array(SELECT a.attname FROM pg_attribute a "
        "             WHERE a.attrelid = c.oid AND a.attnum = ANY(x.indkey))::text[] "
        "FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid "
        "LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = c.oid "
        "WHERE c.relnamespace = 'public'::regnamespace").fetchall()
    expected = {(table, "p", ("id",)) for table in hotdash.TABLES} | {("profiles", "u", ("n",))}
    assert {(t, kind, tuple(cols)) for t, kind, cols in indexes} == expected
    assert len(indexes) == len(expected)
    foreign_keys = scalar(
        conn, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
              "AND connamespace = 'public'::regnamespace")
    assert foreign_keys == 6


def test_load_refuses_an_existing_sample_and_reloads_identically_elsewhere(
        conn: psycopg.Connection[Any], pg: pgcluster.Cluster) -> None:
    with pytest.raises(hotdash.HotDashError, match="already exist"):
        hotdash.load(conn, scale=SCALE)
    fingerprint_sql = ("SELECT md5(string_agg(concat_ws(',', id, user_id, read, kind, body), ';' "
                       "ORDER BY id)) FROM notifications")
    first = scalar(conn, fingerprint_sql)

    other = f"t_{uuid.uuid4().hex[:10]}"  # a second database: the role already exists
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{other}"')
    try:
        with psycopg.connect(pg.dsn(other), autocommit=True) as second:
            assert hotdash.load(second, scale=SCALE) == hotdash.sizes(SCALE)
            assert scalar(second, fingerprint_sql) == first
            second.execute("DROP TABLE notifications, decision_log, inventory_actions, "
                           "user_preferences, sales_pulse_actions, products, profiles")
            hotdash.load(second, scale=SCALE, seed=43)
            assert scalar(second, fingerprint_sql) != first
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_workload_plan_is_deterministic_and_follows_the_weights(
        conn: psycopg.Connection[Any]) -> None:
    plan = hotdash.workload_plan(conn)
    assert plan == hotdash.workload_plan(conn, seed=7)
    assert plan != hotdash.workload_plan(conn, seed=8)
    assert Counter(sql for sql, _ in plan) == {t.sql: t.weight for t in hotdash.TILES}
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(plan))
    assert switches > len(plan) // 2  # shuffled, not in blocks

    users = [r[0] for r in conn.execute("SELECT id FROM profiles ORDER BY n")]
    products = {r[0] for r in conn.execute("SELECT id FROM products")}
    kinds = {t.sql: t.params for t in hotdash.TILES}
    picked_users: Counter[uuid.UUID] = Counter()
    for sql, params in plan:
        assert len(params) == len(kinds[sql]) == sql.count("$")
        for kind, value in zip(kinds[sql], params, strict=True):
            if kind == "user":
                picked_users[value] += 1
            else:
                assert kind == "product" and value in products
    assert set(picked_users) <= set(users)
    assert picked_users.most_common(1)[0][0] == users[0]  # the workload has the data's skew

    small = hotdash.workload_plan(conn, scale_weights=0.1)
    assert Counter(sql for sql, _ in small) == {
        t.sql: max(1, round(t.weight * 0.1)) for t in hotdash.TILES}
    hundred = hotdash.workload_plan(conn, reads=100)
    assert len(hundred) == 100
    assert {sql for sql, _ in hundred} == {t.sql for t in hotdash.TILES}


def test_tiles_and_writes_are_the_readme_statements() -> None:
    assert [t.weight for t in hotdash.TILES] == [400, 400, 60, 40, 100, 10, 20, 200, 60]
    assert hotdash.TILES[1].sql == COUNT_TILE
    assert [t.weight for t in hotdash.WRITES] == [300, 300, 300]
    assert [t.params for t in hotdash.WRITES] == [("user",), ("notification_id",), ("user",)]
    assert len({t.name for t in hotdash.TILES + hotdash.WRITES}) == 12


def test_write_plan_runs_and_commits(conn: psycopg.Connection[Any]) -> None:
    plan = hotdash.write_plan(conn)
    assert plan == hotdash.write_plan(conn)
    assert Counter(sql for sql, _ in plan) == {w.sql: 300 for w in hotdash.WRITES}
    toggles = [p[0] for sql, p in plan if sql.startswith("UPDATE")]
    assert min(toggles) >= 1 and max(toggles) <= 10_000

    small = hotdash.write_plan(conn, scale_weights=0.01)
    assert len(small) == 9
    elapsed = hotdash.run(conn, small)
    assert elapsed > 0
    assert scalar(conn, "SELECT count(*) FROM notifications") == 10_003
    assert scalar(conn, "SELECT count(*) FROM decision_log WHERE decision_type = 'refund' "
                        "AND payload IS NULL") == 3


def test_run_sends_server_side_parameters_seen_by_pg_stat_statements(
        conn: psycopg.Connection[Any]) -> None:
    plan = hotdash.workload_plan(conn, scale_weights=0.1)
    calls = Counter(sql for sql, _ in plan)
    elapsed = hotdash.run(conn, plan)
    assert elapsed > 0

    # The statements reached the server with $n placeholders, as the application sends them
    # (psycopg prepares a statement once it has run a few times; the text is the original one).
    prepared = dict(conn.execute(
        "SELECT statement, parameter_types::text FROM pg_prepared_statements").fetchall())
    assert prepared[COUNT_TILE] == "{uuid}"
    assert prepared[hotdash.TILES[7].sql] == "{uuid}"

    # pg_stat_statements replaces the constants too (read = false becomes read = $2), so each
    # tile is matched by its parse-tree fingerprint, which ignores constants and parameters.
    rows = conn.execute(
        "SELECT query, calls FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()
    recorded = {query: n for query, n in rows}
    assert recorded["SELECT count(*) FROM notifications WHERE user_id = $1 AND read = $2"] \
        == calls[COUNT_TILE] == 40
    by_fingerprint: Counter[str] = Counter()
    for query, n in rows:
        try:
            by_fingerprint[pglast.fingerprint(query)] += n
        except pglast.parser.ParseError:
            continue  # utility statements pg_stat_statements keeps verbatim
    for tile in hotdash.TILES:
        assert by_fingerprint[pglast.fingerprint(tile.sql)] == calls[tile.sql], tile.name
