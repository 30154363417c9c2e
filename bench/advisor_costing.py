"""Advisor costing: index advice costed with HypoPG against advice costed without it, by
building each candidate for real on a scratch copy, on the HotDash sample.

HypoPG is often missing (PostgreSQL builds that do not ship it, Supabase projects with it
disabled). hotdata then costs candidates by building them inside transactions rolled back at
once on HOTDATA_SCRATCH_DATABASE_URL, a copy of the target. This bench says what that costs
and whether the advice differs:

1. a throwaway PostgreSQL with HypoPG (`bot.pgcluster`), `hotdash` loaded and its fixed-seed
   read and write mix run once (as `advisor_replay.py` does), then a copy `hotdash_copy`
   made with `CREATE DATABASE … TEMPLATE hotdash` (same data, same statistics);
2. `analyze` with HypoPG, HOTDATA_SCRATCH_DATABASE_URL set to the copy (so both runs also
   verify their indexes there, and their times compare like with like); `hypopg_s` its time;
3. `DROP EXTENSION hypopg` on the target, `analyze` again: candidates built on the copy;
   `built_s` its time;
4. `same_set`: whether both recommend the same CREATE INDEX statements. When they differ,
   each set is built for real on the target in turn and the read mix replayed
   (`advisor_replay.measure`): `read_server_ratio` and `read_wall_ratio` are the built
   method's set over HypoPG's (1.0 by definition when the sets are the same).

Usage:

    .venv/bin/python bench/advisor_costing.py [--scale 1.0] [--top 20] [--rounds 3]

Prints one JSON object on stdout: `{"scale", "hypopg": {"indexes", "analyze_s"}, "built":
{"indexes", "analyze_s"}, "same_set", "time_ratio", "read_server_ratio", "read_wall_ratio"}`.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import psycopg
from advisor_replay import (
    DATABASE,
    advisor_settings,
    measure,
    prepare,
    run_advisor,
    run_workload,
)
from common import forget_configuration, logger, positive, positive_float, ratio

from bot import pgcluster

COPY = "hotdash_copy"

log = logger("advisor_costing")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=positive_float, default=1.0,
                        help="HotDash size: 1.0 is 200,000 notifications (default 1.0)")
    parser.add_argument("--top", type=positive, default=20,
                        help="statements hotdata analyses (default 20)")
    parser.add_argument("--rounds", type=positive, default=3,
                        help="replays of each set when the sets differ (default 3)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    forget_configuration()  # the advisor must see the bench's configuration only
    log("starting a throwaway PostgreSQL")
    cluster = pgcluster.create()
    workdir = Path(tempfile.mkdtemp(prefix="hotdata-bench-"))
    try:
        url = prepare(cluster, args.scale)
        reads, writes, heavy, _ = run_workload(url)
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {COPY} TEMPLATE {DATABASE}")
        settings = advisor_settings(url, workdir, heavy, scratch_database_url=cluster.url(COPY))
        found = {}
        for method in ("hypopg", "built"):
            if method == "built":
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DROP EXTENSION hypopg")
            seconds, analysis = run_advisor(settings, args.top)
            costing = {r["costing"] for r in analysis.recommendations}
            if costing and costing != {method}:
                raise SystemExit(f"expected {method} costing, the analysis used {costing}")
            found[method] = {"indexes": [r["sql"] for r in analysis.recommendations],
                             "analyze_s": round(seconds, 2)}
            log(f"{method}: {len(analysis.recommendations)} recommendation(s) in "
                f"{seconds:.1f} s")
            for rec in analysis.recommendations:
                log(f"  {rec['sql']}")
            for note in analysis.notes:
                log(f"  note: {note}")
        same = sorted(found["hypopg"]["indexes"]) == sorted(found["built"]["indexes"])
        server: float | None = 1.0
        wall: float | None = 1.0
        if not same:
            samples, _ = measure(url, {m: list(f["indexes"]) for m, f in found.items()},
                                 reads, writes, args.rounds, 1, 1)
            server = ratio(statistics.median(samples["built"].server_read_s),
                           statistics.median(samples["hypopg"].server_read_s))
            wall = ratio(min(samples["built"].read_s), min(samples["hypopg"].read_s))
    finally:
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({
        "scale": args.scale, **found, "same_set": same,
        "time_ratio": ratio(found["built"]["analyze_s"], found["hypopg"]["analyze_s"]),
        "read_server_ratio": server, "read_wall_ratio": wall}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
