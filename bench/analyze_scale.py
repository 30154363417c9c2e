"""Analysis at scale: `hotdata analyze --top 20` on 500 tables and 5,000 distinct statements.

What it measures: a throwaway PostgreSQL (`bot.pgcluster`) gets a database with 500 tables
(t_aaa…t_atf: most of them small, a few of 50k-100k rows so the heaviest statements are really
slow) and a workload of 5,000 distinct statements (10 shapes per table: equality filters,
ranges, ORDER BY … LIMIT, two-table joins, GROUP BY counts) run with parameters through the
extended protocol after `pg_stat_statements_reset()`, the heavy ones several times. Then:

- `cli_wall_s`: the wall-clock time of `hotdata analyze --dsn URL --top 20 --format json` as a
  subprocess (interpreter start-up, imports, collection, planning, rendering), with hotdata
  byte-compiled first as `pip install` and the Docker image leave it: an editable checkout run
  under PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start;
- `in_process_s`: `asyncio.run(bot.advisor.pipeline.analyze(settings, top=20))` in this
  process, imports already done — the analysis work without interpreter start-up;
- `explain_only_s`: "the time spent in EXPLAIN calls alone": for exactly the statements and
  value sets the CLI reported, the same `PREPARE` / `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
  EXECUTE` (plain `EXPLAIN (FORMAT JSON)` when the run was not analysed) / `DEALLOCATE`
  sequence replayed on one connection in a plain loop, a query's generic-plan run too (in a
  transaction, after `SET LOCAL plan_cache_mode = force_generic_plan`). The floor an analysis
  on one connection must pay (hotdata plans on a few connections at once, so its own analysis
  may take less wall time than this; `hotdata_explain_s` sums its EXPLAINs' time).

The machine's load moves these by tenths of a second, so the CLI runs `--repeats` times, each
run followed by its EXPLAIN replay: `cli_wall_s` and `explain_only_s` are the medians, and
`ratio_cli_to_explain` is the median of the pairs' ratios (every sample is listed too). The
first CLI run meets colder tables than any replay after it; the later ones do not.

Targets (from the issue): `cli_wall_s` under 10 s, and under 1.5 times `explain_only_s`
(`ratio_cli_to_explain` < 1.5).

Usage:

    .venv/bin/python bench/analyze_scale.py [--tables 500] [--top 20] [--seed 42] [--repeats 5]

Prints one JSON object on stdout:
`{"tables", "statements_in_pg_stat_statements", "top", "cli_wall_s", "in_process_s",
"explain_only_s", "ratio_cli_to_explain", "ratio_in_process_to_explain", …}` (seconds rounded
to 3 decimals; a few extra diagnostic keys follow). Progress and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import forget_configuration, logger, positive
from psycopg import sql
from psycopg.types.numeric import Int4, Int8

import bot
from bot import pgcluster, sqltext, tools
from bot.advisor.pipeline import analyze
from bot.settings import Settings

DATABASE = "bench"
SHAPES_PER_TABLE = 10
BIG_EVERY = 40  # every 40th table (offset BIG_OFFSET) is a big one
BIG_OFFSET = 7
BIG_MIN_ROWS = 50_000
BIG_MAX_ROWS = 100_000
SMALL_MIN_ROWS = 100
SMALL_MAX_ROWS = 2_000
ACCOUNTS = 2_000
HEAVY_CALLS = 3  # executions of each statement on a big table (small ones run once)
TABLES_PER_BATCH = 25
STATEMENT_TIMEOUT_MS = 5000  # Settings' default, applied to the replay connection as well
CLI_TIMEOUT_S = 300.0
STATUSES = ("active", "active", "active", "pending", "closed", "failed", "archived")
NOW = datetime(2024, 6, 1, tzinfo=UTC)


log = logger("analyze_scale")


# --- the database ----------------------------------------------------------------------------

# Table names carry no digits: pglast's fingerprint (libpg_query) ignores runs of two or more
# digits in relation names, so `t007` and `t047` fingerprint alike and hotdata's collector would
# merge their statements (see --numbered-names).
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def table_names(tables: int, *, numbered: bool = False) -> list[str]:
    """t_aaa, t_aab, … (or t000, t001, … with `numbered`)."""
    if numbered:
        return [f"t{n:03d}" for n in range(tables)]
    return ["t_" + LETTERS[n // 676 % 26] + LETTERS[n // 26 % 26] + LETTERS[n % 26]
            for n in range(tables)]


def is_big(number: int) -> bool:
    return number % BIG_EVERY == BIG_OFFSET


def row_count(number: int) -> int:
    if is_big(number):
        return BIG_MIN_ROWS + (number * 7919) % (BIG_MAX_ROWS - BIG_MIN_ROWS + 1)
    return SMALL_MIN_ROWS + (number * 37) % (SMALL_MAX_ROWS - SMALL_MIN_ROWS + 1)


def table_sql(number: int, name: str) -> str:
    """CREATE and fill one table; accounts are skewed (low ids common), statuses too."""
    statuses = ", ".join(f"'{s}'" for s in STATUSES)
    return f"""
CREATE TABLE {name} (
    id bigserial PRIMARY KEY,
    account int NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    payload text
);
INSERT INTO {name} (account, status, created_at, payload)
SELECT 1 + floor({ACCOUNTS} * power(random(), 2))::int,
       (ARRAY[{statuses}])[1 + (g * 31 + {number}) % {len(STATUSES)}],
       timestamptz '{NOW.isoformat()}' - (g % 525600) * interval '1 minute',
       md5(g::text) || md5((g + {number})::text)
FROM generate_series(1, {row_count(number)}) AS g;
"""


def create_tables(conn: psycopg.Connection[Any], names: list[str]) -> int:
    """Create and fill the tables in a few multi-statement batches; the total row count."""
    conn.execute("SELECT setseed(0.42)")
    for start in range(0, len(names), TABLES_PER_BATCH):
        numbers = range(start, min(start + TABLES_PER_BATCH, len(names)))
        conn.execute("".join(table_sql(n, names[n]) for n in numbers).encode())
        if start and start % 100 == 0:
            log(f"  {start} tables created")
    conn.execute("ANALYZE")
    return sum(row_count(n) for n in range(len(names)))


# --- the workload ----------------------------------------------------------------------------

Params = Callable[[random.Random, int], Sequence[object]]


@dataclass(frozen=True)
class Shape:
    name: str
    sql: str  # {t}: the table, {u}: the table it joins
    params: Params


def _account(rng: random.Random) -> Int4:
    return Int4(1 + int(ACCOUNTS * rng.random() ** 2))


def _status(rng: random.Random) -> str:
    return rng.choice(STATUSES)


def _moment(rng: random.Random) -> datetime:
    return NOW - timedelta(minutes=rng.randrange(525600))


def _limit(rng: random.Random) -> Int8:
    return Int8(rng.choice((10, 20, 50)))


def _account_range(rng: random.Random) -> tuple[Int4, Int4]:
    low = 1 + rng.randrange(ACCOUNTS - 20)
    return Int4(low), Int4(low + rng.randrange(5, 20))


def _time_range(rng: random.Random) -> tuple[datetime, datetime]:
    start = _moment(rng)
    return start, start + timedelta(days=rng.choice((1, 7, 30)))


SHAPES: tuple[Shape, ...] = (
    Shape("eq_account", "SELECT id, status, created_at FROM {t} WHERE account = %s",
          lambda rng, rows: (_account(rng),)),
    Shape("eq_pk", "SELECT * FROM {t} WHERE id = %s",
          lambda rng, rows: (Int8(1 + rng.randrange(rows)),)),
    Shape("eq_two", "SELECT id FROM {t} WHERE account = %s AND status = %s",
          lambda rng, rows: (_account(rng), _status(rng))),
    Shape("range_time", "SELECT count(*) FROM {t} WHERE created_at >= %s AND created_at < %s",
          lambda rng, rows: _time_range(rng)),
    Shape("range_account", "SELECT id, payload FROM {t} WHERE account BETWEEN %s AND %s",
          lambda rng, rows: _account_range(rng)),
    Shape("topn_status", "SELECT id, account, created_at FROM {t} WHERE status = %s "
                         "ORDER BY created_at DESC LIMIT %s",
          lambda rng, rows: (_status(rng), _limit(rng))),
    Shape("topn_all", "SELECT * FROM {t} ORDER BY created_at DESC LIMIT %s",
          lambda rng, rows: (_limit(rng),)),
    Shape("join", "SELECT a.id, a.created_at, b.status FROM {t} a JOIN {u} b ON b.id = a.account "
                  "WHERE a.status = %s ORDER BY a.created_at DESC LIMIT %s",
          lambda rng, rows: (_status(rng), _limit(rng))),
    Shape("group_status", "SELECT status, count(*) FROM {t} WHERE account BETWEEN %s AND %s "
                          "GROUP BY status",
          lambda rng, rows: _account_range(rng)),
    Shape("group_account", "SELECT account, count(*), max(created_at) FROM {t} "
                           "WHERE status = %s GROUP BY account ORDER BY count(*) DESC LIMIT %s",
          lambda rng, rows: (_status(rng), _limit(rng))),
)
assert len(SHAPES) == SHAPES_PER_TABLE


def run_workload(conn: psycopg.Connection[Any], names: list[str], rng: random.Random) -> int:
    """Every shape on every table, with parameters (extended protocol); the executions."""
    conn.execute("SELECT pg_stat_statements_reset()")
    executions = 0
    for number, t in enumerate(names):
        u = names[(number + 1) % len(names)]
        calls = HEAVY_CALLS if is_big(number) else 1
        for shape in SHAPES:
            query = shape.sql.format(t=t, u=u)
            for _ in range(calls):
                conn.execute(query, shape.params(rng, row_count(number))).fetchall()
                executions += 1
    return executions


def pgss_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    assert row is not None
    return int(row[0])


# --- the measurements ------------------------------------------------------------------------

def hotdata_command() -> list[str]:
    script = Path(sys.executable).with_name("hotdata")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bot.cli"]


def compile_hotdata() -> None:
    """Byte-compile the hotdata package where Python looks for it (its __pycache__)."""
    if not compileall.compile_dir(Path(bot.__file__).parent, quiet=1):
        raise SystemExit("hotdata's sources do not compile")


def run_cli(url: str, top: int, workdir: Path) -> tuple[float, dict[str, Any]]:
    command = [*hotdata_command(), "analyze", "--dsn", url, "--top", str(top),
               "--format", "json"]
    started = time.perf_counter()
    result = subprocess.run(command, env=tools.clean_env(), cwd=workdir, capture_output=True,
                            text=True, timeout=CLI_TIMEOUT_S, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"hotdata analyze exited with status {result.returncode}")
    return seconds, json.loads(result.stdout)


def cli_import_seconds(workdir: Path) -> float:
    """Interpreter start-up plus `import bot.cli`: the fixed cost of every CLI run."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import bot.cli"], env=tools.clean_env(), cwd=workdir,
                   check=True)
    return time.perf_counter() - started


@dataclass
class Replay:
    total_s: float  # PREPARE + EXPLAIN + DEALLOCATE, the whole loop
    explain_s: float  # the EXPLAIN … EXECUTE calls only
    runs: int  # every EXPLAIN, the generic-plan ones included
    errors: int
    generic_runs: int = 0


def replay_explains(url: str, queries: list[dict[str, Any]]) -> Replay:
    """The CLI's EXPLAINs again, same statements, values and options, in a plain loop; a
    query's generic-plan run (if the analysis made one) as hotdata runs it: in a transaction
    that forces the generic plan."""
    work: list[tuple[str, list[str | None], bool, bool]] = []
    for query in queries:
        try:
            text = sqltext.repair(query["query"])
        except sqltext.Unparseable:
            continue
        work += [(text, run["values"], bool(run["analyzed"]), False) for run in query["runs"]]
        generic = query.get("generic_run")
        if generic:
            work.append((text, generic["values"], bool(generic["analyzed"]), True))
    options = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    errors = 0
    explain_s = 0.0
    with psycopg.connect(url, autocommit=True, options=options) as conn:
        started = time.perf_counter()
        for number, (text, values, analyzed, generic) in enumerate(work):
            name = sql.Identifier(f"bench_{number}")
            explain = sql.SQL("EXPLAIN ({}) EXECUTE {}").format(
                sql.SQL("ANALYZE, BUFFERS, FORMAT JSON" if analyzed else "FORMAT JSON"), name)
            if values:
                explain += sql.SQL("({})").format(
                    sql.SQL(", ").join(sql.Literal(v) for v in values))
            prepare = sql.SQL("PREPARE {} AS {}").format(name, sql.SQL(text))
            deallocate = sql.SQL("DEALLOCATE {}").format(name)
            if generic:
                # One round trip each way, as before: the transaction and the setting travel
                # with the PREPARE (the statement's text last), the ROLLBACK with the DEALLOCATE.
                prepare = sql.SQL("; ").join([
                    sql.SQL("BEGIN"),
                    sql.SQL("SET LOCAL plan_cache_mode = force_generic_plan"), prepare])
                deallocate = sql.SQL("; ").join([sql.SQL("ROLLBACK"), deallocate])
            try:
                conn.execute(prepare)
                one = time.perf_counter()
                conn.execute(explain).fetchone()
                explain_s += time.perf_counter() - one
            except psycopg.Error as error:
                errors += 1
                log(f"replay error{' (generic plan)' if generic else ''}: "
                    f"{' '.join(str(error).split())[:200]}")
            finally:
                with contextlib.suppress(psycopg.errors.InvalidSqlStatementName):
                    conn.execute(deallocate)
        total = time.perf_counter() - started
    return Replay(total, explain_s, len(work), errors, sum(w[3] for w in work))


def run_in_process(url: str, top: int) -> tuple[float, list[str | None]]:
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    started = time.perf_counter()
    result = asyncio.run(analyze(settings, top=top))
    seconds = time.perf_counter() - started
    return seconds, [r.statement.queryid for r in result.results]


# --- main ------------------------------------------------------------------------------------



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tables", type=positive, default=500,
                        help=f"tables to create, {SHAPES_PER_TABLE} statements each "
                             "(default 500)")
    parser.add_argument("--top", type=positive, default=20,
                        help="statements to analyse (default 20)")
    parser.add_argument("--seed", type=int, default=42, help="workload parameter seed")
    parser.add_argument("--repeats", type=positive, default=5,
                        help="CLI runs, each paired with an EXPLAIN replay (default 5)")
    parser.add_argument("--numbered-names", action="store_true",
                        help="name the tables t000…t499: their statements then share "
                             "fingerprints and hotdata merges them (fewer than --top queries)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = table_names(args.tables, numbered=args.numbered_names)
    # The in-process run must see the same configuration as the CLI subprocess: none.
    forget_configuration()
    wanted = args.tables * SHAPES_PER_TABLE
    log("starting a throwaway PostgreSQL")
    cluster = pgcluster.create(settings={"pg_stat_statements.max": "10000"})
    workdir = Path(tempfile.mkdtemp(prefix="hotdata-bench-"))
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        url = cluster.url(DATABASE)
        setup_started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            log(f"creating {args.tables} tables")
            rows = create_tables(conn, names)
            log(f"{rows:,} rows in {time.perf_counter() - setup_started:.1f} s; "
                f"running {wanted:,} distinct statements")
            executions = run_workload(conn, names, random.Random(args.seed))
            statements = pgss_count(conn)
        setup_s = time.perf_counter() - setup_started
        log(f"{executions:,} executions; {statements:,} entries in pg_stat_statements for "
            f"database {DATABASE}; setup took {setup_s:.1f} s")
        if statements < wanted:
            log(f"expected at least {wanted:,} pg_stat_statements entries, found {statements:,}")
            return 1

        compile_hotdata()
        log(f"timing {' '.join(hotdata_command())} analyze --top {args.top} --format json")
        cli_s, report = run_cli(url, args.top, workdir)
        queries = report.get("queries", [])
        failed = [q for q in queries if q.get("error")]
        log(f"CLI: {cli_s:.3f} s, {len(queries)} queries, {len(failed)} with an error"
            + (f" (first: {failed[0]['error']})" if failed else ""))
        if len(queries) != args.top:
            log(f"expected {args.top} queries in the JSON, got {len(queries)}")
            return 1
        with psycopg.connect(url, autocommit=True) as conn:
            after = pgss_count(conn)
            row = conn.execute("SELECT count(*) FROM pg_stat_statements "
                               "WHERE query LIKE 'EXPLAIN %EXECUTE \"hotdata\\_%'").fetchone()
        log(f"pg_stat_statements entries after the CLI run: {after:,} ({after - statements:+,}, "
            f"of which {row[0] if row else 0} are hotdata's uniquely named EXPLAIN … EXECUTE)")

        replay = replay_explains(url, queries)
        log(f"EXPLAIN replay: {replay.runs} runs ({replay.generic_runs} of a generic plan) "
            f"in {replay.total_s:.3f} s "
            f"(EXPLAIN calls only {replay.explain_s:.3f} s), {replay.errors} error(s)")
        # More pairs, each CLI run next to a replay (the machine's moment is shared): the
        # first CLI run found the tables colder than its replay did, later ones do not.
        cli_runs, replays = [cli_s], [replay]
        for number in range(2, args.repeats + 1):
            cli_runs.append(run_cli(url, args.top, workdir)[0])
            replays.append(replay_explains(url, queries))
            log(f"pair {number}/{args.repeats}: CLI {cli_runs[-1]:.3f} s, EXPLAIN replay "
                f"{replays[-1].total_s:.3f} s")
        ratios = [c / r.total_s for c, r in zip(cli_runs, replays, strict=True)]

        in_process_s, queryids = run_in_process(url, args.top)
        same = queryids == [q["queryid"] for q in queries]
        log(f"in process: {in_process_s:.3f} s "
            f"({'same' if same else 'DIFFERENT'} statements as the CLI)")

        import_s = cli_import_seconds(workdir)
        log(f"interpreter start-up + import bot.cli: {import_s:.3f} s")

        explain_s = statistics.median(r.total_s for r in replays)
        print(json.dumps({
            "tables": args.tables,
            "statements_in_pg_stat_statements": statements,
            "top": args.top,
            "cli_wall_s": round(statistics.median(cli_runs), 3),
            "in_process_s": round(in_process_s, 3),
            "explain_only_s": round(explain_s, 3),
            # the median of the pairs' ratios (each CLI run over the replay right after it)
            "ratio_cli_to_explain": round(statistics.median(ratios), 3),
            "ratio_in_process_to_explain": round(in_process_s / explain_s, 3),
            "cli_wall_samples_s": [round(c, 3) for c in cli_runs],
            "explain_only_samples_s": [round(r.total_s, 3) for r in replays],
            "ratio_samples": [round(r, 3) for r in ratios],
            "explain_runs": replay.runs,
            "explain_execute_calls_s": round(statistics.median(r.explain_s for r in replays), 3),
            "cli_import_s": round(import_s, 3),
            # hotdata's own account of the CLI run: all its EXPLAINs (analysis and the
            # advisor's what-if costing) against the analysis' wall time
            "hotdata_analysis_s": report["timings"]["total_s"],
            "hotdata_explain_s": report["timings"]["explain_s"],
            "ratio_analysis_to_all_explains": round(
                report["timings"]["total_s"] / report["timings"]["explain_s"], 3),
            "setup_s": round(setup_s, 3),
        }))
        return 0
    finally:
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
