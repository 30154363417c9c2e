"""The health checks behind `/hotdata status` and `hotdata doctor`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from bot import migrate
from bot.analysis.collect import SETUP_HINT, pgss_problem
from bot.catalog import TAG
from bot.cron import cron_trigger, next_fire
from bot.db import DatabaseUnavailable, connect
from bot.dsn import redact_dsn
from bot.settings import Settings

if TYPE_CHECKING:  # slack_sdk's async client pulls in aiohttp: not needed by the terminal
    from slack_sdk.web.async_client import AsyncWebClient

State = Literal["ok", "warn", "fail"]

EXTENSIONS = {
    "pg_stat_statements": "query statistics for `analyze` and reports",
    "hypopg": "what-if indexes for the advisor",
    "amcheck": "index verification in restore drills",
}
# Where to get an extension the server does not offer, or how to do without it.
ALTERNATIVES = {
    "hypopg": (" (Debian: postgresql-{major}-hypopg; Supabase: Database → Extensions → hypopg), or "
               "set HOTDATA_SCRATCH_DATABASE_URL to a copy of this database, where the advisor "
               "builds candidates for real instead"),
}


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    detail: str

    @property
    def ok(self) -> bool:
        return self.state != "fail"

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


EXTENSIONS_SQL = TAG + """
SELECT a.name, a.default_version, e.extversion AS installed, n.nspname AS schema
FROM pg_available_extensions a LEFT JOIN pg_extension e ON e.extname = a.name
LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE a.name = ANY (%s)
"""


async def target_checks(settings: Settings) -> list[Check]:
    target = settings.database_url
    try:
        async with connect(settings, "analysis") as conn:
            cur = await conn.execute(
                "SELECT current_setting('server_version') AS version, current_user AS usr, "
                "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser")
            server = await cur.fetchone()
            assert server is not None  # a SELECT without FROM returns its one row
            cur = await conn.execute(EXTENSIONS_SQL, (list(EXTENSIONS),))
            found = {row["name"]: row for row in await cur.fetchall()}
            pgss = await pgss_problem(conn)
            major = conn.info.server_version // 10000
    except DatabaseUnavailable as error:
        return [Check("target database", "fail", str(error))]
    checks = [Check("target database", "ok",
                    f"{redact_dsn(target)} reachable: PostgreSQL {server['version']}, "
                    f"connected as {server['usr']}, read-only"),
              _role_check(server["usr"], server["superuser"])]
    for name, purpose in EXTENSIONS.items():
        checks.append(_extension_check(name, purpose, found.get(name),
                                       pgss if name == "pg_stat_statements" else None, major))
    return checks


def _role_check(user: str, superuser: bool) -> Check:
    """A superuser analysis role would run whatever the target's functions do while hotdata
    plans (an IMMUTABLE function is evaluated by the planner) with every right on the host."""
    if superuser:
        return Check("analysis role", "warn",
                     f"{user} is a superuser: use a least-privilege role (SECURITY.md), so "
                     "that nothing planned on the target can reach the server's files or "
                     "programs")
    return Check("analysis role", "ok", f"{user} is not a superuser")


def _extension_check(name: str, purpose: str, row: dict[str, Any] | None,
                     problem: str | None, major: int) -> Check:
    if row is None:
        how = ALTERNATIVES.get(name, "").format(major=major)
        return Check(name, "warn", f"not available on the server (PostgreSQL {major}): install "
                     f"it for {purpose}{how}")
    if problem and problem.startswith("not preloaded"):
        return Check(name, "warn", f"available but {problem}: {SETUP_HINT}")
    if row["installed"] is None:
        return Check(name, "ok", f"available {row['default_version']}, not yet created in this "
                     f"database: run CREATE EXTENSION {name}")
    return Check(name, "ok", f"available, installed {row['installed']} in schema "
                 f"{row['schema']}")


async def state_check(settings: Settings) -> Check:
    latest = max((m.version for m in migrate.available()), default=None)
    try:
        async with connect(settings, "state") as conn:
            current = await migrate.version(conn)
    except DatabaseUnavailable as error:
        return Check("state schema", "fail", str(error))
    if current is None:
        return Check("state schema", "fail", "not created yet: run `hotdata db upgrade`")
    if current != latest:
        return Check("state schema", "warn",
                     f"version {current}, this hotdata ships {latest}: run `hotdata db upgrade`")
    return Check("state schema", "ok", f"version {current} (up to date)")


async def slack_check(settings: Settings, client: AsyncWebClient | None) -> Check:
    from slack_sdk.errors import SlackApiError  # only when Slack is involved: see above

    if client is None or settings.slack_bot_token is None:
        return Check("slack", "warn", "not configured: SLACK_BOT_TOKEN is not set")
    try:
        identity = await client.auth_test()
    except SlackApiError as error:
        return Check("slack", "fail", f"auth.test failed: {error.response.get('error')}")
    except Exception as error:  # network failures: aiohttp raises many kinds
        return Check("slack", "fail", f"cannot reach the Slack Web API: {type(error).__name__}")
    mode = "Socket Mode" if settings.socket_mode else f"HTTP on port {settings.port}"
    return Check("slack", "ok", f"signed in as @{identity.get('user')} in "
                 f"{identity.get('team')} ({identity.get('team_id')}), {mode}")


LEADER_SQL = """
SELECT name, extract(epoch FROM now() - seen_at)::int AS age FROM hotdata.replicas
WHERE leader AND seen_at > now() - interval '1 minute' ORDER BY seen_at DESC LIMIT 1
"""
LAST_RUNS_SQL = """
SELECT DISTINCT ON (job) job, status, scheduled_for, detail FROM hotdata.job_runs
ORDER BY job, scheduled_for DESC
"""


async def scheduler_check(settings: Settings) -> Check:
    """The leader, each job's next run and its last outcome."""
    try:
        async with connect(settings, "state") as conn:
            ready = await (await conn.execute(
                "SELECT to_regclass('hotdata.replicas') IS NOT NULL AS ok")).fetchone()
            if not ready or not ready["ok"]:
                return Check("scheduler", "warn", "state schema not upgraded yet")
            leader = await (await conn.execute(LEADER_SQL)).fetchone()
            last = {r["job"]: r for r in await (await conn.execute(LAST_RUNS_SQL)).fetchall()}
    except DatabaseUnavailable as error:
        return Check("scheduler", "fail", str(error))
    now = datetime.now(UTC)
    parts = [f"leader {leader['name']} (seen {leader['age']} s ago)" if leader
             else "no leader: no `hotdata serve` is running scheduled jobs"]
    for job, expression in settings.scheduled_jobs.items():
        upcoming = next_fire(cron_trigger(expression), now)
        done = last.get(job)
        parts.append(f"{job}: next {upcoming:%Y-%m-%d %H:%M:%S} UTC" if upcoming else
                     f"{job}: no next run")
        if done is not None:
            parts[-1] += (f", last {done['status']} for {done['scheduled_for']:%Y-%m-%d %H:%M} "
                          "UTC")
    return Check("scheduler", "ok" if leader else "warn", "; ".join(parts))


async def run_all(settings: Settings, client: AsyncWebClient | None) -> list[Check]:
    return [*await target_checks(settings), await state_check(settings),
            await scheduler_check(settings), await slack_check(settings, client)]
