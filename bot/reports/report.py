"""Building the report: the window's statements against the previous window, migrations,
proposals, the last drill, database health (with the last backup check), missed slots — a
constant number of queries."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bot import sqltext
from bot.catalog import TAG
from bot.db import connect
from bot.reports import backups, health, snapshots
from bot.reports.snapshots import Delta
from bot.settings import Settings

TOP = 10
CHANGE = 0.2  # ±20 % in mean time is "slower" / "faster"
CHART_STATEMENTS = 5
REGRESSION = 2.0  # slower than twice what was measured after the migration

HEALTH_SQL = TAG + """
SELECT (SELECT count(*) FROM pg_stat_activity) AS connections,
       current_setting('max_connections')::int AS max_connections,
       (SELECT round(100.0 * sum(blks_hit) / nullif(sum(blks_hit) + sum(blks_read), 0), 2)
          FROM pg_stat_database) AS cache_hit_pct,
       (SELECT extract(epoch FROM max(now() - query_start)) FROM pg_stat_activity
         WHERE state = 'active' AND pid <> pg_backend_pid()) AS longest_query_s,
       (SELECT count(*) FROM pg_stat_activity
         WHERE cardinality(pg_blocking_pids(pid)) > 0) AS blocked,
       (SELECT max(age(datfrozenxid)) FROM pg_database) AS xid_age
"""


@dataclass
class Line:
    delta: Delta
    change: str  # "new" | "slower" | "faster" | ""
    previous_mean_ms: float | None = None


@dataclass
class Report:
    window_start: datetime | None
    window_end: datetime
    top: list[Line] = field(default_factory=list)
    regressions: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)
    last_drill: dict[str, Any] | None = None
    health: dict[str, Any] = field(default_factory=dict)
    missed: list[dict[str, Any]] = field(default_factory=list)
    backups: list[dict[str, Any]] = field(default_factory=list)  # the last backup checks
    plan_regressions: list[dict[str, Any]] = field(default_factory=list)  # analyses' findings
    sequences: list[dict[str, Any]] = field(default_factory=list)  # near their last value
    wraparound: list[dict[str, Any]] = field(default_factory=list)  # tables with old xids
    series: dict[str, list[tuple[datetime, float, float]]] = field(default_factory=dict)
    queries_to_target: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def quiet(self) -> bool:
        return (not self.top and not self.pending and not self.applied and not self.regressions
                and not self.plan_regressions
                and not self.missed)  # a missed slot is always mentioned


def _application(deltas: list[Delta], limit: int) -> list[Delta]:
    """The heaviest `limit` application statements: utility statements (a backup's COPY, SET,
    VACUUM) are left out. Parses only as far down the list as it needs to."""
    found = []
    for delta in deltas:
        if sqltext.is_dml(delta.query) and not sqltext.hotdata_only(delta.query):
            found.append(delta)  # hotdata's own state queries share the target by default
            if len(found) == limit:
                break
    return found


def _compare(now: list[Delta], before: list[Delta]) -> list[Line]:
    old = {d.queryid: d for d in before}
    lines = []
    for delta in _application(now, TOP):
        prior = old.get(delta.queryid)
        if prior is None:
            lines.append(Line(delta, "new"))
            continue
        change = ""
        if delta.mean_ms > prior.mean_ms * (1 + CHANGE):
            change = "slower"
        elif delta.mean_ms < prior.mean_ms * (1 - CHANGE):
            change = "faster"
        lines.append(Line(delta, change, prior.mean_ms))
    return lines


async def build(settings: Settings, window: timedelta) -> Report:
    end_id = await snapshots.take(settings)  # the window ends now
    # the connection's guard check, the extension's schema, then (when it is there) its
    # epochs, statements and tables
    report = Report(None, datetime.now(UTC), queries_to_target=5 if end_id else 2)
    if end_id is None:
        report.notes.append("pg_stat_statements is not available: no statement figures")
    async with connect(settings, "state") as state:
        if end_id is not None:
            await _statements(state, report, window)
        await _proposals(state, report, window)
        await _plan_regressions(state, report, window)
        await _drill_and_missed(state, report)
        report.backups = await backups.latest(state)
    async with connect(settings, "analysis") as target:
        report.health = await (await target.execute(HEALTH_SQL)).fetchone() or {}
        report.sequences = await health.sequences(target)
        report.wraparound = await health.wraparound(target)
    # a second connection's guard check, the health figures, sequences and wraparound
    report.queries_to_target += 4
    return report


async def _statements(state: psycopg.AsyncConnection[dict[str, Any]], report: Report,
                      window: timedelta) -> None:
    end = await snapshots.latest(state)
    assert end is not None
    start = await snapshots.at_or_before(state, end["taken_at"] - window)
    report.window_start = start["taken_at"] if start else None
    current = await snapshots.deltas(state, start, end)
    previous: list[Delta] = []
    if start is not None:
        earlier = await snapshots.at_or_before(state, start["taken_at"] - window)
        if earlier is not None:
            previous = await snapshots.deltas(state, earlier, start)
    report.top = _compare(current, previous)
    report.series = await _series(state, [line.delta.queryid
                                          for line in report.top[:CHART_STATEMENTS]])
    if start is not None:
        await _regressions(state, report, current, start["taken_at"])


async def _regressions(state: psycopg.AsyncConnection[dict[str, Any]], report: Report,
                       current: list[Delta], window_start: datetime) -> None:
    """Statements an index applied before this window served, now much slower than measured
    right after the apply."""
    cur = await state.execute(
        "SELECT index_name, evidence, result FROM hotdata.proposals WHERE status = 'applied' "
        "AND updated_at > now() - interval '7 days' AND updated_at <= %s", (window_start,))
    watched: dict[str, tuple[str, float]] = {}  # identity → (index, expected mean ms)
    for row in await cur.fetchall():
        served = row["evidence"].get("statements", [])
        after = (row["result"] or {}).get("after_ms")
        if not after:
            continue
        for statement in served:
            try:  # measured right after the apply, per statement
                watched[sqltext.identity(statement["text"])] = (row["index_name"],
                                                                after / len(served))
            except sqltext.Unparseable:
                continue
    fingerprints = {key.split(":", 1)[0] for key in watched}
    for delta in current if watched else []:
        try:  # the cheap fingerprint first: most statements are not watched
            if sqltext.fingerprint(delta.query) not in fingerprints:
                continue
            found = watched.get(sqltext.identity(delta.query))
        except sqltext.Unparseable:
            continue
        if found is not None and delta.mean_ms > REGRESSION * found[1] + 1:
            report.regressions.append({"index": found[0], "query": delta.query,
                                       "mean_ms": delta.mean_ms, "after_ms": found[1]})


async def _series(state: psycopg.AsyncConnection[dict[str, Any]], queryids: list[str]
                  ) -> dict[str, list[tuple[datetime, float, float]]]:
    """Per statement, per snapshot interval of the last 24 hours: (time, total ms, mean ms)."""
    if not queryids:
        return {}
    cur = await state.execute(
        "SELECT s.taken_at, s.statements_reset, s.server_started, st.queryid, st.calls, "
        "st.total_ms FROM hotdata.snapshot_statements st "
        "JOIN hotdata.snapshots s ON s.id = st.snapshot_id "
        "WHERE s.taken_at > now() - interval '24 hours' AND st.queryid = ANY(%s) "
        "ORDER BY st.queryid, s.taken_at", (queryids,))
    series: dict[str, list[tuple[datetime, float, float]]] = {}
    previous: dict[str, dict[str, Any]] = {}
    for row in await cur.fetchall():
        old = previous.get(row["queryid"])
        previous[row["queryid"]] = row
        if old is None:
            continue
        same = (old["statements_reset"], old["server_started"]) == (
            row["statements_reset"], row["server_started"]) and row["calls"] >= old["calls"]
        calls = row["calls"] - old["calls"] if same else row["calls"]
        total = row["total_ms"] - old["total_ms"] if same else row["total_ms"]
        series.setdefault(row["queryid"], []).append(
            (row["taken_at"], float(total), float(total) / calls if calls else 0.0))
    return series


async def _proposals(state: psycopg.AsyncConnection[dict[str, Any]], report: Report,
                     window: timedelta) -> None:
    cur = await state.execute(
        "SELECT id, index_name, table_name, extract(epoch FROM now() - created_at) AS waited_s "
        "FROM hotdata.proposals WHERE status = 'pending' ORDER BY id")
    report.pending = await cur.fetchall()
    cur = await state.execute(
        "SELECT id, index_name, table_name, result FROM hotdata.proposals "
        "WHERE status = 'applied' AND updated_at > now() - %s::interval ORDER BY id",
        (window,))
    report.applied = await cur.fetchall()


PLAN_REGRESSIONS_SQL = """
SELECT a.id AS analysis_id, a.finished_at, q->>'query' AS query, f->>'table' AS table,
       f->>'detail' AS detail, f->>'fix' AS fix
FROM hotdata.analyses a, jsonb_array_elements(a.report->'queries') q,
     jsonb_array_elements(q->'findings') f
WHERE a.status = 'done' AND a.finished_at > now() - %s::interval
  AND f->>'kind' = 'plan_regression'
ORDER BY a.id DESC LIMIT 10
"""


async def _plan_regressions(state: psycopg.AsyncConnection[dict[str, Any]], report: Report,
                            window: timedelta) -> None:
    """The plan regressions the window's analyses found (bot.analysis.plan_history)."""
    cur = await state.execute(PLAN_REGRESSIONS_SQL, (window,))
    report.plan_regressions = await cur.fetchall()


async def _drill_and_missed(state: psycopg.AsyncConnection[dict[str, Any]], report: Report) -> None:
    cur = await state.execute(
        "SELECT id, status, rto_seconds, rpo_seconds, "
        "extract(epoch FROM now() - finished_at) AS age_s FROM hotdata.drills "
        "WHERE status <> 'running' ORDER BY id DESC LIMIT 1")
    report.last_drill = await cur.fetchone()
    cur = await state.execute(
        "SELECT job, scheduled_for FROM hotdata.job_runs WHERE status = 'missed' "
        "AND scheduled_for > coalesce((SELECT max(scheduled_for) FROM hotdata.job_runs "
        "WHERE job = 'report' AND status = 'succeeded'), '-infinity') ORDER BY scheduled_for")
    report.missed = await cur.fetchall()


def chart(report: Report) -> bytes | None:
    """PNG: total time per interval of the top statements, and the p95 of their mean times."""
    if not report.series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (totals, p95) = pyplot.subplots(2, 1, figsize=(9, 6), sharex=True)
    labels = {line.delta.queryid: " ".join(line.delta.query.split())[:40]
              for line in report.top}
    moments: dict[datetime, list[float]] = {}
    for queryid, points in report.series.items():
        totals.plot([p[0] for p in points], [p[1] for p in points],
                    label=labels.get(queryid, queryid), marker=".")
        for moment, _, mean in points:
            moments.setdefault(moment, []).append(mean)
    totals.set_ylabel("total ms per interval")
    totals.legend(fontsize=7, loc="upper left")
    ordered = sorted(moments)
    p95.plot(ordered, [_p95(moments[m]) for m in ordered], color="crimson", marker=".")
    p95.set_ylabel("p95 of mean ms")
    figure.suptitle("Top statements, last 24 hours")
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    return buffer.getvalue()


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
