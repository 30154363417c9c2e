"""Applying an approved index under write load: what `CREATE INDEX CONCURRENTLY` costs writers.

What it measures: a throwaway PostgreSQL (`bot.pgcluster`) gets a database `bench` with
`public.events(id bigserial pk, account int, kind text, created_at timestamptz, payload text)`
of 2,000,000 rows (generate_series), vacuumed and analysed. Real `pgbench` (from the cluster's
bindir, a client connecting over TCP to 127.0.0.1) then runs a rate-limited write load on that
table: `--clients` connections (default 4), autocommit, each transaction one single-row
statement — an INSERT (script 0) or an UPDATE by random id (script 1), weighted 1:1 — at
`--rate` transactions per second in total (default 500, so the baseline is not CPU-bound on a
2-core machine), with per-transaction logs (`--log`). One pgbench run covers the whole
timeline, so both phases see the same connections and the same schedule:

1. warm-up (`--warmup`, 3 s, not counted);
2. phase A, baseline (`--baseline`, 10 s): load only;
3. phase B: the same load while `asyncio.run(bot.proposals.apply.apply(settings, rec))` builds
   `CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_events_account_created_at ON public.events
   (account, created_at DESC)` on the migrator connection with `lock_timeout_ms` 5000 (its
   retries, validity check, ANALYZE, and the before/after measurement of one statement the
   index serves, unless `--no-measure`);
4. pgbench is stopped with SIGALRM (how pgbench ends a `-T` run: it finishes and writes its
   logs) one second after the apply returns.

A write's latency is its statement time: pgbench's logged transaction time minus its
rate-limit schedule lag (the time it waited in pgbench's own queue, which depends on the client
process, not the server; the figure with the lag is reported too). Baseline: writes that ran
entirely inside phase A. During apply: writes whose execution overlapped the apply window.

To tell lock waits from CPU contention, `diagnostics` adds: a 50 ms sampler of
`pg_stat_activity`, `pg_locks` and `pg_stat_progress_create_index` (the writers' wait events and
ungranted locks, the build's phases and parallel workers, the writes during the CREATE INDEX
statement alone); the server logs every lock wait over 100 ms (`log_lock_waits`,
`deadlock_timeout = 100ms`), counted in `lock_waits_logged`; the host's CPU use per phase
(/proc/stat) and the writers' backends' run-queue time per write (/proc/PID/schedstat: time
runnable but waiting for a core); and the slowest writes of the apply window with the build
phase they ran in. The machine is shared: `host_loadavg_1m` shows how busy it was.

Targets (from the issue): p99 write latency during the apply within 2x the baseline p99
(`p99_ratio` <= 2), and no write waiting longer than the lock timeout
(`max_write_wait_ms` <= `lock_timeout_ms`); the index must end valid (pg_index).

Usage:

    .venv/bin/python bench/apply_under_load.py [--rows 2000000] [--clients 4] [--rate 500]
        [--baseline 10] [--warmup 3] [--lock-timeout-ms 5000] [--protocol prepared]
        [--maintenance-workers N] [--no-measure]

Prints one JSON object on stdout:
`{"rows", "clients", "rate_tps", "baseline": {"p50_ms", "p99_ms", "max_ms", "count", …},
"during_apply": {…}, "apply_seconds", "lock_timeout_ms", "p99_ratio", "max_write_wait_ms",
"targets_met": {"p99_within_2x", "no_write_over_lock_timeout"}, "index_valid", …}`
(percentiles by nearest rank; a few extra diagnostic keys follow). Progress and diagnostics go
to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from common import logger, nearest_rank, positive
from psycopg.rows import dict_row

from bot import pgcluster
from bot.proposals.apply import ApplyFailed, apply
from bot.settings import Settings

DATABASE = "bench"
ACCOUNTS = 50_000
INDEX = "idx_events_account_created_at"
TABLE = "public.events"
INDEX_SQL = (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} "
             f"ON {TABLE} (account, created_at DESC);")
MEASURED_STATEMENT = ("SELECT id, created_at FROM public.events WHERE account = $1 "
                      "ORDER BY created_at DESC LIMIT 20")
SCRIPTS = {
    "insert": ("\\set account random(1, :accounts)\n"
               "INSERT INTO public.events (account, kind, created_at, payload) "
               "VALUES (:account, 'bench', now(), 'written by pgbench');\n"),
    "update": ("\\set id random(1, :maxid)\n"
               "UPDATE public.events SET payload = 'updated by pgbench', kind = 'bench' "
               "WHERE id = :id;\n"),
}
SCRIPT_KINDS = list(SCRIPTS)  # pgbench's script_no is the index in this list
SAMPLE_INTERVAL_S = 0.05
NO_BUILD = "no index build running (apply's measuring, checks or ANALYZE)"
TAIL_S = 1.0
MAX_APPLY_S = 1800
STOP_TIMEOUT_S = 15.0

SETUP_SQL = """
CREATE TABLE public.events (
    id bigserial PRIMARY KEY,
    account int NOT NULL,
    kind text NOT NULL,
    created_at timestamptz NOT NULL,
    payload text
)"""
POPULATE_SQL = """
INSERT INTO public.events (account, kind, created_at, payload)
SELECT 1 + (random() * (%(accounts)s - 1))::int,
       (ARRAY['view', 'click', 'purchase', 'signup'])[1 + g %% 4],
       now() - make_interval(secs => random() * 90 * 86400),
       md5(g::text) || md5((g * 7)::text)
FROM generate_series(1, %(rows)s) AS g"""
SAMPLE_SQL = """
SELECT a.application_name AS app, a.backend_type, a.state, a.wait_event_type, a.wait_event,
       EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) AS lock_wait,
       p.phase, a.query ILIKE '%%CREATE INDEX%%' AS building, leader.application_name AS leader
FROM pg_stat_activity a LEFT JOIN pg_stat_progress_create_index p ON p.pid = a.pid
     LEFT JOIN pg_stat_activity leader ON leader.pid = a.leader_pid AND a.leader_pid <> a.pid
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND (a.application_name IN ('pgbench', 'hotdata-migrator')
       OR a.backend_type = 'parallel worker')"""


log = logger("apply_under_load")


# --- the table ---------------------------------------------------------------------------------

def prepare_database(cluster: pgcluster.Cluster, rows: int) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    with psycopg.connect(cluster.dsn(DATABASE), autocommit=True) as conn:
        conn.execute(SETUP_SQL)
        started = time.perf_counter()
        conn.execute(POPULATE_SQL, {"rows": rows, "accounts": ACCOUNTS})
        log(f"inserted {rows:,} rows in {time.perf_counter() - started:.1f} s; vacuuming")
        conn.execute("VACUUM (ANALYZE) public.events")
        conn.execute("CHECKPOINT")


def server_setting(cluster: pgcluster.Cluster, name: str) -> str:
    with psycopg.connect(cluster.dsn(DATABASE), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    return str(row[0]) if row else ""


def index_state(cluster: pgcluster.Cluster) -> tuple[bool, bool]:
    """(valid, ready) of the index in pg_index; (False, False) when it does not exist."""
    with psycopg.connect(cluster.dsn(DATABASE), autocommit=True) as conn:
        row = conn.execute("SELECT indisvalid, indisready FROM pg_index "
                           "WHERE indexrelid = to_regclass(%s)",
                           (f"public.{INDEX}",)).fetchone()
    return (bool(row[0]), bool(row[1])) if row else (False, False)


# --- the write load ----------------------------------------------------------------------------

@dataclass
class Write:
    kind: str
    start: float  # epoch seconds the statement started executing
    end: float  # epoch seconds it completed
    latency_ms: float  # statement time (end - start)
    lag_ms: float  # pgbench's rate-limit schedule lag before it started


@dataclass
class Load:
    process: subprocess.Popen[bytes]
    workdir: Path
    started: float


def start_pgbench(cluster: pgcluster.Cluster, workdir: Path, args: argparse.Namespace,
                  duration: int) -> Load:
    for kind, text in SCRIPTS.items():
        (workdir / f"{kind}.sql").write_text(text)
    jobs = max(1, min(args.clients, os.cpu_count() or 1))
    command = [
        str(cluster.tool("pgbench")), "--no-vacuum",
        "--host", "127.0.0.1", "--port", str(cluster.port), "--username", pgcluster.SUPERUSER,
        "--client", str(args.clients), "--jobs", str(jobs), "--rate", str(args.rate),
        "--time", str(duration), "--protocol", args.protocol,
        "--log", "--log-prefix", str(workdir / "txlog"),
        "--define", f"maxid={args.rows}", "--define", f"accounts={ACCOUNTS}",
        *(part for kind in SCRIPT_KINDS for part in ("--file", f"{workdir / kind}.sql@1")),
        DATABASE,
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    log(f"starting pgbench: {args.clients} clients, {jobs} threads, {args.rate} tps, "
        f"{args.protocol} protocol")
    with open(workdir / "pgbench.out", "wb") as out:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT)
    return Load(process, workdir, time.time())


def stop_pgbench(load: Load, cluster: pgcluster.Cluster) -> int:
    """End the run the way `-T` does (SIGALRM: clients finish, logs are written)."""
    process = load.process
    if process.poll() is None:
        process.send_signal(signal.SIGALRM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log("pgbench ignored SIGALRM; terminating its connections")
    with psycopg.connect(cluster.dsn(DATABASE), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'pgbench'")
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=5)


def read_writes(workdir: Path) -> tuple[list[Write], int]:
    """Every logged write, and how many transactions pgbench logged as failed or skipped.

    Line format with --rate: client_id transaction_no time script_no time_epoch time_us
    schedule_lag; `time` (µs) counts from the scheduled start, so it includes the lag.
    """
    writes: list[Write] = []
    failed = 0
    for path in sorted(workdir.glob("txlog.*")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 7:
                continue
            if not parts[2].isdigit():
                failed += 1
                continue
            total_us, lag_us = int(parts[2]), int(parts[6])
            end = int(parts[4]) + int(parts[5]) / 1e6
            latency_us = total_us - lag_us
            writes.append(Write(kind=SCRIPT_KINDS[int(parts[3])], start=end - latency_us / 1e6,
                                end=end, latency_ms=latency_us / 1000, lag_ms=lag_us / 1000))
    return writes, failed


# --- what the server was doing -----------------------------------------------------------------

@dataclass
class Sample:
    at: float
    rows: list[dict[str, Any]]


@dataclass
class Sampler:
    dsn: str
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: str | None = None

    def start(self) -> Sampler:
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True,
                                 row_factory=dict_row) as conn:
                while not self.stop.is_set():
                    at = time.time()
                    rows = conn.execute(SAMPLE_SQL).fetchall()
                    self.samples.append(Sample(at, rows))
                    self.stop.wait(SAMPLE_INTERVAL_S)
        except psycopg.Error as error:
            self.error = str(error)

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.error:
            log(f"sampler stopped early: {self.error}")

    def writer_waits(self, start: float, end: float) -> dict[str, Any]:
        """What the active pgbench backends were doing, over samples in [start, end]."""
        seen: Counter[str] = Counter()
        lock_waits = 0
        for sample in self.samples:
            if not start <= sample.at <= end:
                continue
            for row in sample.rows:
                if row["app"] != "pgbench" or row["state"] != "active":
                    continue
                seen[f"{row['wait_event_type']}:{row['wait_event']}"
                     if row["wait_event_type"] else "CPU"] += 1
                lock_waits += bool(row["lock_wait"])
        return {"active_backend_samples": sum(seen.values()), "lock_wait_samples": lock_waits,
                "by_wait_event": dict(seen.most_common(8))}

    def build_phases(self, start: float) -> list[dict[str, Any]]:
        """The CREATE INDEX progress phases, with when each was first and last seen."""
        phases: dict[str, list[float]] = {}
        for sample in self.samples:
            for row in sample.rows:
                if row["app"] == "hotdata-migrator" and row["phase"]:
                    span = phases.setdefault(row["phase"], [sample.at, sample.at])
                    span[1] = sample.at
        return [{"phase": name, "from_s": round(first - start, 2),
                 "to_s": round(last - start, 2)} for name, (first, last) in phases.items()]

    def phase_at(self, moment: float) -> str:
        """The build phase in the sample nearest `moment`."""
        best: tuple[float, str] = (math.inf, NO_BUILD)
        for sample in self.samples:
            distance = abs(sample.at - moment)
            if distance < best[0]:
                phase = next((row["phase"] for row in sample.rows
                              if row["app"] == "hotdata-migrator" and row["phase"]), NO_BUILD)
                best = (distance, phase)
        return best[1]

    def max_parallel_workers(self, start: float, end: float, leader: str) -> int:
        """The most parallel workers seen at once working for `leader` (application name)."""
        return max((sum(row["backend_type"] == "parallel worker" and row["leader"] == leader
                        for row in sample.rows)
                    for sample in self.samples if start <= sample.at <= end), default=0)

    def build_window(self) -> tuple[float, float] | None:
        """First and last sample in which the migrator was running CREATE INDEX."""
        moments = [sample.at for sample in self.samples for row in sample.rows
                   if row["app"] == "hotdata-migrator" and row["state"] == "active"
                   and row["building"]]
        return (min(moments), max(moments)) if moments else None


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole host from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def writer_pids(dsn: str) -> list[int]:
    """The server processes serving pgbench's connections."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity "
                            "WHERE application_name = 'pgbench'").fetchall()
    return [int(row[0]) for row in rows]


def run_queue_ns(pids: Sequence[int]) -> int | None:
    """Nanoseconds these processes spent runnable but waiting for a CPU (/proc/PID/schedstat,
    second field), summed; None where the kernel does not say."""
    if not pids:
        return None
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
    return total


def per_write_ms(before: int | None, after: int | None, writes: int) -> float | None:
    if before is None or after is None or writes == 0:
        return None
    return round((after - before) / 1e6 / writes, 4)


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else None


# --- figures -----------------------------------------------------------------------------------



def summarize(writes: list[Write], seconds: float) -> dict[str, Any]:
    if not writes:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, "count": 0}
    ordered = sorted(w.latency_ms for w in writes)
    with_lag = sorted(w.latency_ms + w.lag_ms for w in writes)
    figures: dict[str, Any] = {
        "p50_ms": round(nearest_rank(ordered, 50), 3),
        "p99_ms": round(nearest_rank(ordered, 99), 3),
        "max_ms": round(ordered[-1], 3),
        "count": len(writes),
        "seconds": round(seconds, 2),
        "tps": round(len(writes) / seconds, 1) if seconds > 0 else None,
        "p99_incl_schedule_lag_ms": round(nearest_rank(with_lag, 99), 3),
    }
    for kind in SCRIPT_KINDS:
        mine = sorted(w.latency_ms for w in writes if w.kind == kind)
        if mine:
            figures[f"{kind}_p99_ms"] = round(nearest_rank(mine, 99), 3)
    return figures


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


# --- the apply ---------------------------------------------------------------------------------

def proposal(measure: bool) -> dict[str, Any]:
    statements = [{"label": "latest events of an account", "text": MEASURED_STATEMENT,
                   "values": ["4242"]}] if measure else []
    return {"index": INDEX, "table": TABLE, "sql": INDEX_SQL,
            "columns": ["account", "created_at DESC"], "statements": statements}


def run_apply(url: str, lock_timeout_ms: int, measure: bool
              ) -> tuple[float, float, dict[str, Any] | None, str | None]:
    """(started, ended) epoch seconds, apply()'s figures, and its error."""
    settings = Settings(_env_file=None, database_url=url,  # type: ignore[call-arg]
                        migrator_database_url=url, state_database_url=url,
                        lock_timeout_ms=lock_timeout_ms)
    started = time.time()
    try:
        result: dict[str, Any] | None = asyncio.run(apply(settings, proposal(measure)))
        error = None
    except ApplyFailed as failed:
        result, error = None, str(failed)
    return started, time.time(), result, error


# --- main --------------------------------------------------------------------------------------



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=positive, default=2_000_000,
                        help="rows in public.events (default 2000000)")
    parser.add_argument("--clients", type=positive, default=4,
                        help="pgbench client connections (default 4)")
    parser.add_argument("--rate", type=positive, default=500,
                        help="target writes per second, all clients together (default 500)")
    parser.add_argument("--baseline", type=positive, default=10,
                        help="seconds of load without the apply (default 10)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="seconds of load before the baseline, not counted (default 3)")
    parser.add_argument("--lock-timeout-ms", type=positive, default=5000,
                        help="the migrator's lock_timeout (default 5000)")
    parser.add_argument("--protocol", choices=("simple", "extended", "prepared"),
                        default="prepared", help="pgbench query protocol (default prepared)")
    parser.add_argument("--maintenance-workers", type=int, default=None,
                        help="server max_parallel_maintenance_workers (default: the server's, "
                             "2 out of the box); 0 builds the index in one process")
    parser.add_argument("--no-measure", action="store_true",
                        help="apply without measuring a statement before and after")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    extra = {"log_lock_waits": "on", "deadlock_timeout": "'100ms'"}
    if args.maintenance_workers is not None:
        extra["max_parallel_maintenance_workers"] = str(args.maintenance_workers)
    log("starting a throwaway PostgreSQL")
    cluster = pgcluster.create(extra)
    workdir = Path(tempfile.mkdtemp(prefix="hotdata-bench-"))
    load: Load | None = None
    sampler: Sampler | None = None
    try:
        log(f"creating {TABLE} with {args.rows:,} rows")
        prepare_database(cluster, args.rows)
        url = cluster.url(DATABASE)
        sampler = Sampler(cluster.dsn(DATABASE)).start()
        load = start_pgbench(cluster, workdir, args,
                             args.warmup + args.baseline + MAX_APPLY_S)
        time.sleep(args.warmup)
        if load.process.poll() is not None:
            log(f"pgbench exited early:\n{(workdir / 'pgbench.out').read_text()[-2000:]}")
            return 1
        log(f"baseline: {args.baseline} s of load only")
        pids = writer_pids(cluster.dsn(DATABASE))
        loadavg = os.getloadavg()[0]
        base_start, cpu0, queue0 = time.time(), cpu_times(), run_queue_ns(pids)
        time.sleep(args.baseline)
        base_end, cpu1, queue1 = time.time(), cpu_times(), run_queue_ns(pids)
        log(f"applying {INDEX} under load (lock_timeout {args.lock_timeout_ms} ms)")
        apply_start, apply_end, result, error = run_apply(url, args.lock_timeout_ms,
                                                          not args.no_measure)
        cpu2, queue2 = cpu_times(), run_queue_ns(pids)
        apply_seconds = apply_end - apply_start
        log(f"apply {'failed: ' + error if error else 'done'} in {apply_seconds:.2f} s")
        time.sleep(TAIL_S)
        status = stop_pgbench(load, cluster)
        sampler.finish()
        if status != 0:
            log(f"pgbench exited with status {status}:\n"
                f"{(workdir / 'pgbench.out').read_text()[-2000:]}")
        writes, failed = read_writes(workdir)
        log(f"{len(writes)} writes logged, {failed} failed")
        valid, ready = index_state(cluster)

        baseline = [w for w in writes if w.start >= base_start and w.end <= base_end]
        during = [w for w in writes if w.end >= apply_start and w.start <= apply_end]
        base = summarize(baseline, base_end - base_start)
        under = summarize(during, apply_seconds)
        p99_ratio = ratio(under["p99_ms"], base["p99_ms"])
        max_wait = under["max_ms"]
        window = sampler.build_window()
        build_figures = None if window is None else summarize(
            [w for w in during if w.end >= window[0] and w.start <= window[1]],
            window[1] - window[0])
        slowest = sorted(during, key=lambda w: w.latency_ms, reverse=True)[:5]
        lock_waits_logged = sum("still waiting for" in line for line in
                                cluster.logfile.read_text(errors="replace").splitlines())
        print(json.dumps({
            "rows": args.rows,
            "clients": args.clients,
            "rate_tps": args.rate,
            "baseline": base,
            "during_apply": under,
            "apply_seconds": round(apply_seconds, 3),
            "lock_timeout_ms": args.lock_timeout_ms,
            "p99_ratio": p99_ratio,
            "max_write_wait_ms": max_wait,
            "targets_met": {
                "p99_within_2x": p99_ratio is not None and p99_ratio <= 2,
                "no_write_over_lock_timeout": (max_wait is not None
                                               and max_wait <= args.lock_timeout_ms),
            },
            "index_valid": valid and ready,
            "apply_error": error,
            "apply_result": result,
            "failed_writes": failed,
            "diagnostics": {
                "cores": os.cpu_count(),
                "host_loadavg_1m": {"at_baseline_start": round(loadavg, 2),
                                    "at_end": round(os.getloadavg()[0], 2)},
                "max_parallel_maintenance_workers":
                    server_setting(cluster, "max_parallel_maintenance_workers"),
                "parallel_workers_seen": {
                    "index_build": sampler.max_parallel_workers(apply_start, apply_end,
                                                                "hotdata-migrator"),
                    "measuring": sampler.max_parallel_workers(apply_start, apply_end,
                                                              "hotdata-analysis")},
                "during_index_build_only": build_figures,
                "cpu_busy": {"baseline": busy_fraction(cpu0, cpu1),
                             "during_apply": busy_fraction(cpu1, cpu2)},
                "writer_run_queue_ms_per_write": {
                    "baseline": per_write_ms(queue0, queue1, len(baseline)),
                    "during_apply": per_write_ms(queue1, queue2, len(during))},
                "writer_waits": {"baseline": sampler.writer_waits(base_start, base_end),
                                 "during_apply": sampler.writer_waits(apply_start, apply_end)},
                "build_phases": sampler.build_phases(apply_start),
                "slowest_writes_during_apply": [
                    {"ms": round(w.latency_ms, 3), "kind": w.kind,
                     "at_s": round(w.start - apply_start, 2), "phase": sampler.phase_at(w.start)}
                    for w in slowest],
                "lock_waits_logged": lock_waits_logged,
            },
        }))
        return 0 if error is None else 1
    finally:
        if load is not None and load.process.poll() is None:
            load.process.kill()
            load.process.wait(timeout=5)
        if sampler is not None:
            sampler.finish()
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
