"""The report's slow emergencies on a real PostgreSQL: a sequence near the end of its column's
type (an `integer` column fed by a `bigint` sequence) or of its own bound, and a table whose
oldest unfrozen transaction ID is old; each quiet once fixed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg

from bot import migrate
from bot.db import connect
from bot.render import report as render
from bot.reports import health
from bot.reports.report import Report, build
from tests.harness import settings_for


def found(url: str, what: str, limits: health.Limits) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with connect(settings_for(url), "analysis") as conn:
            result: list[dict[str, Any]] = await getattr(health, what)(conn, limits)
            return result
    return asyncio.run(go())


def test_a_sequence_near_its_columns_limit_is_reported_until_widened(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id serial PRIMARY KEY, note text)")
        conn.execute("CREATE TABLE public.events (id bigserial PRIMARY KEY)")
        conn.execute("CREATE SEQUENCE public.tickets AS smallint")
        conn.execute("INSERT INTO public.orders (note) VALUES ('a')")
        conn.execute("INSERT INTO public.events DEFAULT VALUES")
        conn.execute("SELECT setval('public.orders_id_seq', 2000000000)")  # of 2,147,483,647
        conn.execute("SELECT setval('public.events_id_seq', 2000000000)")  # bigint: far away
        conn.execute("SELECT setval('public.tickets', 30000)")  # of 32,767
    [orders, tickets] = found(database, "sequences", health.Limits())
    assert orders == {"sequence": "public.orders_id_seq", "table": "orders", "column": "id",
                      "type": "integer", "used": 0.9313, "left": 147483647}
    assert health.sequence_fix(orders).startswith(
        "ALTER TABLE orders ALTER COLUMN id TYPE bigint")
    assert tickets["sequence"] == "public.tickets" and tickets["table"] is None
    assert tickets["used"] == 0.9156 and tickets["left"] == 2767

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.orders ALTER COLUMN id TYPE bigint")
        conn.execute("ALTER SEQUENCE public.orders_id_seq AS bigint")
        conn.execute("ALTER SEQUENCE public.tickets AS integer")
    assert found(database, "sequences", health.Limits()) == []


def test_a_table_with_old_unfrozen_rows_is_reported_until_frozen(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.ledger (id int)")
        conn.execute("INSERT INTO public.ledger VALUES (1)")
        conn.execute("VACUUM (FREEZE) public.ledger")
        for _ in range(300):  # transactions since the table was frozen
            conn.execute("SELECT txid_current()")
    limits = health.Limits(xid_age=250)
    tables = [t["table"] for t in found(database, "wraparound", limits)]
    assert "ledger" in tables
    [ledger] = [t for t in found(database, "wraparound", limits) if t["table"] == "ledger"]
    assert ledger["xid_age"] >= 300 and ledger["used"] == round(ledger["xid_age"] / 2**31, 4)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("VACUUM (FREEZE) public.ledger")
    assert "ledger" not in [t["table"] for t in found(database, "wraparound", limits)]
    # at the real threshold a fresh cluster has nothing to report
    assert found(database, "wraparound", health.Limits()) == []


def test_the_report_warns_of_both_and_says_how_to_fix_them(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id serial PRIMARY KEY)")
        conn.execute("SELECT setval('public.orders_id_seq', 2100000000)")
    settings = settings_for(database)

    async def go() -> Report:
        async with connect(settings, "state") as conn:
            await migrate.upgrade(conn)
        return await build(settings, timedelta(hours=2))
    report = asyncio.run(go())
    text = render.markdown(report)
    assert ("sequence public.orders_id_seq (feeds orders.id, integer) has used 98% of its "
            "values, 47,483,647 left: ALTER TABLE orders ALTER COLUMN id TYPE bigint") in text
    assert "of the way to wraparound" not in text  # a fresh cluster is far from it
    assert "public.orders_id_seq" in str(render.blocks(report))
