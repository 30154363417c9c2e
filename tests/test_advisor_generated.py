"""The index advisor on generated workloads (`bot.sample.generated`) nobody tuned it for: what
it recommends builds, makes no statement's plan dearer, and every sequential scan it reports
ends in a recommendation or in a reason it declined one."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from bot import pgcluster
from bot.advisor.pipeline import analyze
from bot.analysis.model import QueryResult
from bot.sample import generated
from bot.sample.hotdash import to_client_sql
from tests.harness import TEMPLATE, advised, clone, drop

SEEDS = (1, 2, 3)  # consecutive, not chosen: between them, every kind of statement
SCALE = 0.5  # 10,000 to 50,000 rows a seed: several tables above the seq_scan finding's 10,000
EXAMPLES = 3  # value sets per read statement whose plans are compared
COST_SLACK = 0.01  # the planner keeps paths within 1 % of the cheapest (its fuzz factor)
COST_NOISE = 0.5
LARGE_ROWS = 5_000  # a seq_scan finding on a table this large must be answered


def label(result: QueryResult) -> str:
    """A statement as recommendations name it in `queries` (bot.advisor.recommend._label)."""
    s = result.statement
    return s.name or (f"queryid {s.queryid}" if s.queryid else s.query[:60])


def total_cost(conn: psycopg.Connection[Any], query: generated.Query,
               values: tuple[Any, ...]) -> float:
    """The planner's cost of `query` with `values`, bound as the application binds them."""
    text, args = to_client_sql(query.sql, values)
    [(plan,)] = conn.execute("EXPLAIN (FORMAT JSON) " + text, args).fetchall()
    document = json.loads(plan) if isinstance(plan, str) else plan
    return float(document[0]["Plan"]["Total Cost"])


def costs(conn: psycopg.Connection[Any], workload: generated.Workload
          ) -> dict[tuple[str, int], float]:
    return {(query.name, n): total_cost(conn, query, values)
            for query in workload.reads
            for n, values in enumerate(workload.examples(query, EXAMPLES))}


def test_a_seed_is_always_the_same_workload(pg: pgcluster.Cluster) -> None:
    assert generated.generate(7) == generated.generate(7)
    assert generated.generate(7) != generated.generate(8)
    fingerprints = []
    for _ in range(2):
        name = clone(pg, TEMPLATE)
        try:
            with psycopg.connect(pg.url(name), autocommit=True) as conn:
                workload = generated.load(conn, 7, scale=0.1)
                data = {table: conn.execute(
                    f"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} AS t"
                ).fetchone() for table in workload.table_names}
                fingerprints.append((data, workload.read_plan(), workload.write_plan()))
        finally:
            drop(pg, name)
    assert fingerprints[0] == fingerprints[1]


@pytest.mark.parametrize("seed", SEEDS)
async def test_the_advice_on_a_generated_workload_builds_helps_and_answers_every_scan(
        database: str, seed: int) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        workload = generated.load(conn, seed, SCALE)
        # Nothing may change the statistics between the plans compared below but the indexes.
        for table in workload.table_names:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        generated.reset_statistics(conn)
        generated.run(conn, workload)
    result = await analyze(advised(database), top=20)
    context = json.dumps({"workload": generated.describe(workload),
                          "recommendations": [r["sql"] for r in result.recommendations],
                          "notes": result.notes}, indent=1, default=str)
    errors = [(r.statement.query, r.error) for r in result.results if r.error]
    assert not errors, context

    with psycopg.connect(database, autocommit=True) as conn:
        # The writes left dead rows and moved row counts, and a build counts the rows again:
        # counted once here, before and after see the same table statistics.
        conn.execute(f"VACUUM (ANALYZE) {', '.join(workload.table_names)}")
        before = costs(conn, workload)
        for rec in result.recommendations:
            conn.execute(rec["sql"])
            schema = rec["table"].split(".")[0]
            [(valid,)] = conn.execute(
                "SELECT i.indisvalid FROM pg_index i "
                "WHERE i.indexrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))",
                (schema, rec["index"])).fetchall()
            assert valid, (rec["sql"], context)
        after = costs(conn, workload)

    worse = {key: (before[key], after[key]) for key in before
             if after[key] > before[key] * (1 + COST_SLACK) + COST_NOISE}
    assert not worse, (worse, context)

    served = {q for rec in result.recommendations for q in rec["queries"]}
    declined = {d["statement"] for d in getattr(result, "declined", [])}
    large = {f"public.{t.name}" for t in workload.tables if t.rows >= LARGE_ROWS}
    unanswered = [(label(r), r.statement.query, f.detail) for r in result.results
                  for f in r.findings if f.kind == "seq_scan" and f.table in large
                  and label(r) not in served and label(r) not in declined]
    assert not unanswered, (unanswered, context)
