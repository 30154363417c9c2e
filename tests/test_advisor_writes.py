"""An index's write cost, measured in the same window as the reads it saves: a bulk load before
the window does not count, a write-heavy window does (and the analysis says why it declined the
index, with the numbers), and an index on a column that updates set is charged the HOT updates
it would end."""

from __future__ import annotations

import json

import psycopg
import pytest

from bot.advisor import writes
from bot.advisor.model import Candidate
from bot.advisor.pipeline import analyze
from bot.catalog import Index, Table
from bot.render import analysis as render
from tests.harness import advised

BULK_ROWS = 200_000
READ = "SELECT id, kind FROM events WHERE account_id = %s"


@pytest.fixture
def loaded(database: str) -> str:
    """`events` bulk-loaded (one INSERT … SELECT of BULK_ROWS rows) before the window: the
    table counters hold those inserts, pg_stat_statements (reset afterwards) does not."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_reset()")  # the counters' window starts with the load
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, account_id int NOT NULL, "
                     "kind text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
        conn.execute(f"INSERT INTO events (account_id, kind) SELECT g % 2000, "
                     f"(ARRAY['click', 'view', 'buy'])[1 + g % 3] "
                     f"FROM generate_series(1, {BULK_ROWS}) AS g")
        conn.execute("ANALYZE events")
        conn.execute("SELECT pg_stat_statements_reset()")
    return database


def reads(url: str, calls: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for n in range(calls):
            conn.execute(READ, (n % 2000,))


def wanted(result: object) -> bool:
    return any(r["table"] == "public.events" and r["columns"][0] == "account_id"
               for r in getattr(result, "recommendations", []))


async def test_a_bulk_load_before_the_window_does_not_suppress_the_index(loaded: str) -> None:
    reads(loaded, 10)
    result = await analyze(advised(loaded), top=5)
    assert wanted(result), (result.recommendations, result.declined, result.notes)
    [rec] = [r for r in result.recommendations if r["table"] == "public.events"]
    assert rec["write_penalty_ms"] == 0  # nothing was written in the window
    assert result.declined == []


async def test_a_write_heavy_window_declines_the_index_and_says_why(loaded: str) -> None:
    reads(loaded, 3)
    with psycopg.connect(loaded, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO events (account_id, kind) VALUES (%s, 'view')",
                        [(n % 2000,) for n in range(30_000)])
    result = await analyze(advised(loaded), top=5)
    assert not wanted(result), result.recommendations
    [declined] = [d for d in result.declined if "account_id" in (d["candidate"] or "")]
    assert declined["reason"].startswith("not recommended: saves ")
    assert "30,000 rows inserted" in declined["reason"], declined
    assert declined["cost_ms"] is not None and declined["saving_ms"] is not None
    assert declined["cost_ms"] >= declined["saving_ms"]
    # everywhere the analysis is shown
    assert json.loads(render.as_json(result))["recommendations_declined"][0] == declined
    assert declined["reason"] in render.markdown(result)
    assert any("Not recommended" in json.dumps(block) for block in render.blocks(result))


def test_an_index_on_a_column_updates_set_is_charged_the_hot_updates_it_ends() -> None:
    table = Table(1, "public", "orders", 10_000, columns=["id", "status", "total"],
                  indexes=[Index("orders_pkey", ["id"]), Index("orders_total", ["total"])])
    window = writes.TableWrites([
        writes.Write("public.orders", "UPDATE", 1000, 1000.0, frozenset({"status"})),
        writes.Write("public.orders", "INSERT", 10, 100_000.0)], hot_share=0.9)
    on_status = writes.penalty(Candidate("public", "orders", ("status",)), table, window)
    on_total = writes.penalty(Candidate("public", "orders", ("id", "total DESC")), table, window)
    partial = writes.penalty(Candidate("public", "orders", ("id",), "status = 'open'"), table,
                             window)
    # the bulk insert is charged 100 rows a call; 10 % of the updates are not HOT anyway
    base = 10 * writes.BULK_ROWS + 1000 * 0.1
    assert on_total.rows == pytest.approx(base)
    # HOT updates of status now write an entry in all three indexes
    assert on_status.rows == pytest.approx(base + 1000 * 0.9 * 3)
    assert partial.rows == on_status.rows  # its predicate reads status
    assert on_status.ms == pytest.approx(on_status.rows * writes.WRITE_MS_PER_ROW)
    assert "HOT today (90% of the table's updates)" in on_status.detail
    assert "1 bulk statement(s) charged 100 rows a call" in on_total.detail


@pytest.mark.parametrize(("text", "expected"), [
    ("UPDATE orders SET status = $1, total = total + $2 WHERE id = $3",
     ("UPDATE", "orders", frozenset({"status", "total"}))),
    ("INSERT INTO app.orders (id) VALUES ($1) ON CONFLICT DO NOTHING",
     ("INSERT", "app.orders", frozenset())),
    ("WITH gone AS (SELECT 1) DELETE FROM orders WHERE id = $1", ("DELETE", "orders",
                                                                  frozenset())),
    ("COPY orders FROM STDIN", ("COPY", "orders", frozenset())),
    ("COPY orders TO STDOUT", None),
    ("SELECT 1", None),
])
def test_write_statements_are_read_for_their_target(
        text: str, expected: tuple[str, str, frozenset[str]] | None) -> None:
    found = writes.target(text)
    assert (None if found is None else (found[0], found[1].key, found[2])) == expected


async def test_an_index_over_the_budget_is_declined_with_the_space_left(loaded: str) -> None:
    reads(loaded, 10)
    result = await analyze(advised(loaded, index_budget_mb=0.5), top=5)
    assert not wanted(result), result.recommendations
    [declined] = [d for d in result.declined if "account_id" in (d["candidate"] or "")]
    assert declined["reason"].startswith("over the budget: idx_events_account_id"), declined
    assert "0.5 MB of HOTDATA_INDEX_BUDGET_MB are left" in declined["reason"]
