"""Advisor generalization: hotdata's index recommendations against a per-query baseline on
generated workloads (`bot.sample.generated`), one per seed, none of them tuned for.

`advisor_replay.py` measures the advisor on HotDash, the workload it was built against; this
bench asks whether the advice holds on schemas and statement mixes nobody looked at. For each
seed, in a throwaway PostgreSQL (`bot.pgcluster`, one database per seed):

1. `generated.load(conn, seed, scale)` (committed synchronously, so its VACUUM can mark pages
   all-visible, as the replays' VACUUMs do), the statistics reset, then the seed's read mix and
   write mix run once through the extended protocol (`generated.run`), so pg_stat_statements
   and the table counters describe the workload;
2. hotdata's advisor: `analyze(settings, top=--top)` on the database, nothing configured but
   its URL (no watched queries, no application role); its wall time is `advisor_s`;
3. the per-query baseline, as `advisor_replay.py` computes it (`common.single_column_baseline`):
   for each read statement, matched to its analysed result by `sqltext.identity`, the
   single-column HypoPG index that lowers its cost most over the value sets the analysis used
   (a statement through a view: its columns on the view's table); duplicates built once;
4. the reachable set: every index the advisor considered for the analysed statements
   (`bot.advisor.recommend.candidates`: each statement's candidates, covering variants and
   unions included) and the baseline's, all built at once. No choice among these candidates
   can do much better than this set (more indexes only ever give the planner more choice),
   so it says how far the target is within their reach;
5. for each set (none, baseline, hotdata, reachable), in `--rounds` rounds whose order
   rotates: drop the previous set, build this one for real (hotdata's `CREATE INDEX
   CONCURRENTLY …` as given), `VACUUM (ANALYZE)` the tables (also clearing the rows the
   previous write mix left dead), sum `pg_relation_size` of the built indexes, replay the
   same read mix on a fresh connection (wall time, and server time: `total_exec_time` from
   pg_stat_statements, reset just before) and the same write mix (timed inside one
   transaction, then ROLLED BACK, so every set starts from the same data; `--write-repeats`
   times, a write mix taking milliseconds). A set's figure is the fastest of its replays
   (other work on a busy machine only ever adds time).

Ratios are hotdata's over the baseline's: `server_ratio` (read-mix server time: what an index
can change), `wall_ratio` (read-mix wall time, which also carries the client round trips no
index changes), `size_ratio` (index bytes) and `write_ratio` (write-mix time). A ratio with
nothing to divide by (the baseline built no index, say) is null and left out of the medians.
`size_estimate_ratio` checks the advisor's own size estimates: the bytes its recommendations
state over the bytes they took once built (1.0 is exact). `reachable_ratio` is the reachable
set's server time over the baseline's: the best the candidates allow, whatever their size.

Targets: the median server ratio at most 0.5, no seed's server ratio above 1.0, and the median
size ratio at most 1.5 and write ratio at most 1.2.

Usage:

    .venv/bin/python bench/advisor_generalization.py --seeds 3 [--first-seed 1] [--scale 1.0]
        [--top 20] [--rounds 3] [--write-repeats 10]

Prints one JSON object on stdout: `{"scale", "seeds": {seed: {"server_ratio", "wall_ratio",
"size_ratio", "write_ratio", "size_estimate_ratio", "reachable_ratio", "hotdata_indexes",
"baseline_indexes", "reachable_indexes", …}}, "medians": {…},
"targets_met": {…}}`; each seed also lists its tables, statements, each set's figures and the
indexes of both sets. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from common import (
    SERVER_SECONDS_SQL,
    Costed,
    TableInfo,
    build,
    forget_configuration,
    logger,
    median_ratio,
    own_indexes,
    positive,
    positive_float,
    ratio,
    single_column_baseline,
    table_info,
)
from psycopg import sql

from bot import pgcluster, sqltext
from bot.advisor.model import Candidate
from bot.advisor.pipeline import analyze
from bot.advisor.recommend import candidates, workload
from bot.analysis.model import Analysis
from bot.db import connect
from bot.sample import generated
from bot.settings import Settings

SERVER_TARGET = 0.5  # median over seeds of hotdata's read-mix server time / the baseline's
WORST_TARGET = 1.0  # no seed's server ratio above this
SIZE_TARGET = 1.5  # median of hotdata's index bytes / the baseline's
WRITE_TARGET = 1.2  # median of hotdata's write-mix time / the baseline's
SETS = ("none", "baseline", "hotdata", "reachable")

log = logger("advisor_generalization")


# --- one seed --------------------------------------------------------------------------------

def prepare(cluster: pgcluster.Cluster, seed: int,
            scale: float) -> tuple[str, generated.Workload]:
    """A database for `seed` with pg_stat_statements and hypopg, the workload loaded into it,
    its mix run once after the statistics were reset; its URL and the workload."""
    name = f"generated_{seed}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = cluster.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        for extension in ("pg_stat_statements", "hypopg"):
            conn.execute(sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(extension)))
        # As advisor_replay.prepare: the throwaway cluster commits asynchronously, and VACUUM
        # marks no page all-visible before the commit that wrote it is flushed.
        conn.execute("SET synchronous_commit = on")
        started = time.perf_counter()
        workload = generated.load(conn, seed, scale)
        log(f"seed {seed}: loaded {sum(t.rows for t in workload.tables):,} rows in "
            f"{len(workload.tables)} tables, {len(workload.views)} view(s) in "
            f"{time.perf_counter() - started:.1f} s")
        generated.reset_statistics(conn)
        seconds = generated.run(conn, workload)
        log(f"seed {seed}: {len(workload.reads)} reads and {len(workload.writes)} writes, "
            f"{sum(q.calls for q in (*workload.reads, *workload.writes)):,} calls in "
            f"{seconds:.1f} s")
    return url, workload


def index_tables(conn: psycopg.Connection[Any],
                 workload: generated.Workload) -> dict[str, TableInfo]:
    """The catalog facts of the workload's tables, and each view's name mapped to its table
    (a generated view passes its columns through under their own names, so a view column is
    the table's column of that name)."""
    tables = table_info(conn, workload.table_names)
    for view in workload.views:
        base = tables[view.table]
        tables[view.name] = TableInfo(base.schema, base.name, view.columns, base.indexed)
    return tables


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def baseline_statements(workload: generated.Workload, analysis: Analysis) -> list[Costed]:
    """Each read statement as the analysis costed it (the text pg_stat_statements recorded,
    the owner's value sets), or, for one the analysis did not plan, as the workload sends it
    with a few of its own values."""
    results = {r.statement.identity: r for r in analysis.results}
    statements: list[Costed] = []
    for query in workload.reads:
        result = results.get(sqltext.identity(query.sql))
        value_sets = [r.values for r in result.runs if r.role == "owner" and r.plan] \
            if result is not None else []
        if result is not None and value_sets:
            statements.append((query.name, sqltext.repair(result.statement.query), value_sets))
            continue
        log(f"seed {workload.seed}: {query.name} not planned by the analysis: costed with "
            "its own values")
        statements.append((query.name, query.sql, [[_text(v) for v in values] for values
                                                    in workload.examples(query, 3)]))
    return statements


async def considered(settings: Settings, analysis: Analysis) -> list[Candidate]:
    """Every index the advisor considered for the analysed statements (`candidates`)."""
    async with connect(settings, "analysis") as conn:
        _, pool = await candidates(conn, workload(analysis.results, None))
    return pool


@dataclass
class Figures:
    """What one index set measured, over the rounds."""

    indexes: list[tuple[str, str, int]] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)
    server_s: list[float] = field(default_factory=list)
    write_s: list[float] = field(default_factory=list)
    # statement name → server ms of the replay with the least server time
    by_statement: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"indexes": len(self.indexes), "bytes": sum(b for *_, b in self.indexes),
                "read_wall_s": round(min(self.read_s), 4),
                "read_server_s": round(min(self.server_s), 4),
                "write_s": round(min(self.write_s), 4),
                "read_wall_samples_s": [round(t, 4) for t in self.read_s],
                "read_server_samples_s": [round(t, 4) for t in self.server_s],
                "read_server_ms_by_statement": self.by_statement}


# Each statement's share of a replay's server time, to name where a set loses.
BY_STATEMENT_SQL = """
SELECT query, total_exec_time FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%pg_stat_statements%'
"""


def replay_reads(url: str, plan: generated.Plan, into: Figures) -> None:
    """The read mix on a fresh connection (so it starts with no prepared statements: psycopg
    prepares a statement on its fifth execution, as the application's driver would)."""
    names = {sqltext.identity(query.sql): query.name for query, _ in plan}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        started = time.perf_counter()
        generated.execute(conn, plan)
        into.read_s.append(time.perf_counter() - started)
        [(server_s,)] = conn.execute(SERVER_SECONDS_SQL).fetchall()
        rows = conn.execute(BY_STATEMENT_SQL).fetchall()
    into.server_s.append(float(server_s))
    if float(server_s) <= min(into.server_s):
        by_name: dict[str, float] = {}
        for text, ms in rows:
            name = names.get(sqltext.identity(text), "other")
            by_name[name] = by_name.get(name, 0.0) + float(ms)
        into.by_statement = {k: round(v, 2) for k, v in
                             sorted(by_name.items(), key=lambda kv: -kv[1])}


def replay_writes(url: str, plan: generated.Plan, into: Figures) -> None:
    """The write mix in one transaction, timed before the ROLLBACK that undoes it."""
    with psycopg.connect(url, autocommit=False) as conn:
        started = time.perf_counter()
        generated.execute(conn, plan)
        into.write_s.append(time.perf_counter() - started)
        conn.rollback()


def measure(url: str, workload: generated.Workload, index_sets: dict[str, list[str]],
            rounds: int, write_repeats: int) -> dict[str, Figures]:
    reads, writes = workload.read_plan(), workload.write_plan()
    figures = {label: Figures() for label in index_sets}
    labels = list(index_sets)
    for number in range(rounds):
        shift = number % len(labels)
        for label in labels[shift:] + labels[:shift]:
            into = figures[label]
            with psycopg.connect(url, autocommit=True) as conn:
                build(conn, index_sets[label], workload.table_names)
                into.indexes = own_indexes(conn, workload.table_names)
            replay_reads(url, reads, into)
            for _ in range(write_repeats):  # a write mix takes milliseconds: take several
                replay_writes(url, writes, into)
            log(f"seed {workload.seed} round {number + 1}/{rounds} {label}: "
                f"{len(into.indexes)} index(es), {sum(b for *_, b in into.indexes) / 1e6:.2f} MB;"
                f" reads {into.read_s[-1]:.3f} s (server {into.server_s[-1]:.3f} s), writes "
                f"{min(into.write_s[-write_repeats:]):.3f} s (fastest of {write_repeats})")
    return figures


def one_seed(cluster: pgcluster.Cluster, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    url, workload = prepare(cluster, seed, args.scale)
    try:
        settings = Settings(_env_file=None, database_url=url)
        started = time.perf_counter()
        analysis = asyncio.run(analyze(settings, top=args.top))
        advisor_s = time.perf_counter() - started
        recommendations = analysis.recommendations
        log(f"seed {seed}: advisor: {len(recommendations)} recommendation(s) in "
            f"{advisor_s:.1f} s")
        for rec in recommendations:
            log(f"  {rec['sql']}  (serves {', '.join(rec['queries'])})")
        with psycopg.connect(url, autocommit=True) as conn:
            tables = index_tables(conn, workload)
        choices = asyncio.run(single_column_baseline(
            settings, baseline_statements(workload, analysis), tables, log))
        baseline = list(dict.fromkeys(c.candidate for c in choices if c.candidate))
        reachable = list(dict.fromkeys([*asyncio.run(considered(settings, analysis)),
                                        *baseline]))
        index_sets = {
            "none": [],
            "baseline": [c.create_sql(named=True) for c in baseline],
            "hotdata": [rec["sql"] for rec in recommendations],
            "reachable": [c.create_sql(concurrently=True) for c in reachable],
        }
        found = {label: f.summary() for label, f in
                 measure(url, workload, index_sets, args.rounds,
                         args.write_repeats).items()}
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(f"generated_{seed}")))
    ours, base = found["hotdata"], found["baseline"]
    return {
        "server_ratio": ratio(ours["read_server_s"], base["read_server_s"]),
        "wall_ratio": ratio(ours["read_wall_s"], base["read_wall_s"]),
        "size_ratio": ratio(ours["bytes"], base["bytes"]),
        # every index the advisor considered and the baseline's, all built: what choosing
        # among these candidates could reach at best
        "reachable_ratio": ratio(found["reachable"]["read_server_s"], base["read_server_s"]),
        "write_ratio": ratio(ours["write_s"], base["write_s"]),
        # the sizes the advisor estimated for its set over the bytes they took once built
        "size_estimate_ratio": ratio(sum(r["size_bytes"] or 0 for r in recommendations),
                                     ours["bytes"]),
        "hotdata_indexes": ours["indexes"],
        "baseline_indexes": base["indexes"],
        "reachable_indexes": found["reachable"]["indexes"],
        "advisor_s": round(advisor_s, 3),
        "tables": {t.name: t.rows for t in workload.tables},
        "reads": {q.name: q.calls for q in workload.reads},
        "writes": {q.name: q.calls for q in workload.writes},
        "sets": found,
        "indexes": {"hotdata": index_sets["hotdata"], "baseline": index_sets["baseline"]},
        "declined": len(getattr(analysis, "declined", [])),
    }


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=positive, required=True,
                        help="how many generated workloads (seeds --first-seed, +1, …)")
    parser.add_argument("--first-seed", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--scale", type=positive_float, default=1.0,
                        help="rows: 1.0 is 20,000 to 100,000 a seed (default 1.0)")
    parser.add_argument("--top", type=positive, default=20,
                        help="statements hotdata analyses (default 20)")
    parser.add_argument("--rounds", type=positive, default=3,
                        help="builds and replays of each set per seed; the fastest counts "
                             "(default 3)")
    parser.add_argument("--write-repeats", type=positive, default=10,
                        help="write-mix replays per set and round, each rolled back; the "
                             "fastest counts (default 10)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The advisor must see the bench's configuration only.
    forget_configuration()
    log("starting a throwaway PostgreSQL")
    cluster = pgcluster.create()
    try:
        seeds = {}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            seeds[str(seed)] = found = one_seed(cluster, seed, args)
            log(f"seed {seed}: server ratio {found['server_ratio']}, wall {found['wall_ratio']}"
                f", size {found['size_ratio']}, writes {found['write_ratio']}")
    finally:
        cluster.destroy()
    medians = {key: median_ratio([s[key] for s in seeds.values()])
               for key in ("server_ratio", "wall_ratio", "size_ratio", "write_ratio",
                           "size_estimate_ratio", "reachable_ratio")}
    server = [s["server_ratio"] for s in seeds.values() if s["server_ratio"] is not None]
    targets = {
        f"median_server_at_most_{SERVER_TARGET}x": medians["server_ratio"] is not None
        and medians["server_ratio"] <= SERVER_TARGET,
        f"no_seed_server_above_{WORST_TARGET}x": bool(server)
        and max(server) <= WORST_TARGET,
        f"median_size_at_most_{SIZE_TARGET}x": medians["size_ratio"] is not None
        and medians["size_ratio"] <= SIZE_TARGET,
        f"median_write_at_most_{WRITE_TARGET}x": medians["write_ratio"] is not None
        and medians["write_ratio"] <= WRITE_TARGET,
    }
    targets["all"] = all(targets.values())
    print(json.dumps({"scale": args.scale, "rounds": args.rounds,
                      "write_repeats": args.write_repeats, "seeds": seeds,
                      "medians": medians, "targets_met": targets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
