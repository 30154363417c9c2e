"""hotdata's configuration: environment variables and `.env`, validated once at start-up."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.cron import cron_trigger
from bot.dsn import parse_dsn, scrub
from bot.errors import UserError

DAY_MS = 24 * 3600 * 1000
YEAR_HOURS = 366 * 24
# Slack's ids: users (U…, or W… on Enterprise Grid), user groups (S…), channels (C…, G…, D…).
SLACK_USER = re.compile(r"[UW][A-Z0-9]{1,20}")
SLACK_GROUP = re.compile(r"S[A-Z0-9]{1,20}")
SLACK_CHANNEL = re.compile(r"[CGD][A-Z0-9]{1,20}")
SECRET_PREFIXES = {"slack_bot_token": "xoxb-", "slack_app_token": "xapp-"}
# Extensions that reach past their database (other servers, the server's files, untrusted
# languages): a schema review never creates them, whatever a plan or a setting says.
UNSAFE_EXTENSIONS = frozenset({"dblink", "postgres_fdw", "file_fdw", "adminpack", "plpython3u",
                               "plpythonu", "plpython2u", "plperlu", "pltclu", "plsh"})


class ConfigError(UserError):
    """A setting is missing or malformed; the message is one line naming the variable."""


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOTDATA_", env_file=".env", extra="ignore", populate_by_name=True,
        allow_inf_nan=False,
    )

    slack_bot_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=_env("SLACK_SIGNING_SECRET")
    )
    slack_app_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_APP_TOKEN"))

    database_url: str
    state_database_url: str | None = None
    migrator_database_url: str | None = None
    drill_database_url: str | None = None
    scratch_database_url: str | None = None

    manager_ids: Annotated[list[str], NoDecode] = []
    review_extensions: Annotated[list[str], NoDecode] = [
        "vector", "pg_trgm", "citext", "uuid-ossp", "pgcrypto"]
    manager_group: str | None = None
    channel: str | None = None
    report_cron: str = "0 */2 * * *"
    drill_cron: str | None = None
    port: int = Field(3000, ge=1, le=65535)
    slack_api_url: str = "https://slack.com/api/"
    statement_timeout_ms: int = Field(5000, ge=100, le=DAY_MS)
    watched_queries: Path | None = None
    app_role: str | None = None
    app_jwt_claims: str | None = None
    index_budget_mb: float = Field(1024.0, gt=0, le=1024 * 1024)
    migrations_dir: Path | None = None
    migration_layout: Literal["supabase", "prisma"] = "supabase"
    prisma_schema: Path | None = None  # schema.prisma: proposals carry their @@index line
    lock_timeout_ms: int = Field(5000, ge=100, le=DAY_MS)
    apply_retries: int = Field(3, ge=0, le=20)
    proposal_ttl_hours: float = Field(72.0, gt=0, le=YEAR_HOURS)
    apply_growth_limit: float = Field(2.0, ge=1.0, le=1000.0)
    apply_window: str | None = None  # crontab minutes in which approved migrations are built
    approvals_required: int = Field(1, ge=1, le=10)
    approvals_required_over_mb: float | None = Field(None, ge=0, le=1024 * 1024 * 1024)
    allow_self_approval: bool = False
    plan_regression_ratio: float = Field(2.0, ge=1.0, le=1000.0)  # a changed plan this slower…
    plan_regression_min_ms: float = Field(5.0, ge=0, le=DAY_MS)  # …and by at least this
    drill_source: Literal["dump", "directory", "pgbackrest", "barman"] = "dump"
    drill_backup_dir: Path | None = None
    drill_pgbackrest_stanza: str | None = None
    drill_pgbackrest_config: Path | None = None
    drill_barman_server: str | None = None
    drill_barman_config: Path | None = None
    drill_restore_dir: Path | None = None
    drill_jobs: int = Field(2, ge=1, le=32)
    drill_fingerprint_max_mb: float = Field(50.0, ge=0, le=1024 * 1024)
    drill_target: str = "latest"  # pgbackrest, barman: latest | random | an ISO timestamp with zone
    rto_target_seconds: float | None = Field(None, gt=0, le=YEAR_HOURS * 3600)
    rpo_target_seconds: float | None = Field(None, gt=0, le=YEAR_HOURS * 3600)
    backup_max_age_hours: float = Field(26.0, gt=0, le=YEAR_HOURS)
    snapshot_cron: str = "*/10 * * * *"
    snapshot_retention_hours: float = Field(48.0, gt=0, le=YEAR_HOURS)
    missed_grace_minutes: float = Field(15.0, ge=0, le=YEAR_HOURS * 60)

    @field_validator("manager_ids", "review_extensions", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("manager_ids")
    @classmethod
    def _slack_user_ids(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not SLACK_USER.fullmatch(v)]
        if bad:
            raise ValueError(f"{bad[0][:40]!r} is not a Slack user id")
        return value

    @field_validator("manager_group", "channel")
    @classmethod
    def _slack_ids(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern = SLACK_GROUP if info.field_name == "manager_group" else SLACK_CHANNEL
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(f"{value[:40]!r} is not a Slack id of that kind")
        return value

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token")
    @classmethod
    def _slack_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        prefix = SECRET_PREFIXES.get(str(info.field_name), "")
        if not secret.strip() or secret != secret.strip() or " " in secret:
            raise ValueError("it is empty or holds spaces")
        if not secret.startswith(prefix):
            raise ValueError(f"it does not start with {prefix}")
        return value

    @field_validator("review_extensions")
    @classmethod
    def _safe_extensions(cls, value: list[str]) -> list[str]:
        unsafe = sorted(set(value) & UNSAFE_EXTENSIONS)
        if unsafe:
            raise ValueError(f"{', '.join(unsafe)} can reach other databases or the server's "
                             "files, and is never created by a review")
        return value

    @field_validator("database_url", "state_database_url", "migrator_database_url",
                     "drill_database_url", "scratch_database_url")
    @classmethod
    def _valid_dsn(cls, value: str | None) -> str | None:
        if value is not None:
            parse_dsn(value)
        return value

    @field_validator("report_cron", "snapshot_cron")
    @classmethod
    def _valid_report_cron(cls, value: str) -> str:
        cron_trigger(value)
        return value

    @field_validator("drill_cron", "apply_window")
    @classmethod
    def _valid_optional_cron(cls, value: str | None) -> str | None:
        """Empty means none: no scheduled drill, no apply window (build once approved)."""
        if value:
            cron_trigger(value)
        return value or None

    @field_validator("drill_target")
    @classmethod
    def _valid_target(cls, value: str) -> str:
        if value not in ("latest", "random"):
            target_time(value)
        return value

    @field_validator("app_jwt_claims")
    @classmethod
    def _json_object(cls, value: str | None) -> str | None:
        if value is not None and not isinstance(json.loads(value), dict):
            raise ValueError("must be a JSON object")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _slash_terminated(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value if value.endswith("/") else value + "/"

    @property
    def state_dsn(self) -> str:
        return self.state_database_url or self.database_url

    @property
    def migrator_dsn(self) -> str:
        return self.migrator_database_url or self.database_url

    @property
    def scratch_server(self) -> str:
        """Where schema reviews create their throwaway databases: the drill server, else the
        target's server (as its URL's role)."""
        return self.drill_database_url or self.database_url

    @property
    def drills_configured(self) -> bool:
        """Whether a drill has somewhere to restore: a scratch server for dumps, or a private
        data directory for pgBackRest and Barman."""
        if self.drill_source == "pgbackrest":
            return self.drill_pgbackrest_stanza is not None
        if self.drill_source == "barman":
            return self.drill_barman_server is not None
        return self.drill_database_url is not None

    @property
    def scheduled_jobs(self) -> dict[str, str]:
        """The leader's jobs and their crontab expressions: the report and statistics
        snapshots always, the drill when one is scheduled and has somewhere to run and post."""
        jobs = {"report": self.report_cron, "snapshot": self.snapshot_cron}
        if self.drill_cron and self.drills_configured and self.channel:
            jobs["drill"] = self.drill_cron
        return jobs

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def secrets(self) -> list[str]:
        """Every secret value in the configuration, for scrubbing text before it is shown."""
        found = [s.get_secret_value() for s in (self.slack_bot_token, self.slack_signing_secret,
                                                 self.slack_app_token) if s is not None]
        for dsn in (self.database_url, self.state_database_url, self.migrator_database_url,
                    self.drill_database_url, self.scratch_database_url):
            if dsn:
                password = parse_dsn(dsn).get("password")
                if password:
                    found.append(password)
        return found

    def scrub(self, text: str) -> str:
        """`text` without any configured secret, fit to post or log."""
        return scrub(text, self.secrets())

    def require_for_serve(self) -> None:
        """Slack credentials `hotdata serve` cannot run without."""
        if self.slack_bot_token is None:
            raise ConfigError("SLACK_BOT_TOKEN is not set: the bot token (xoxb-…) from the "
                              "Slack app's OAuth & Permissions page")
        if not self.socket_mode and self.slack_signing_secret is None:
            raise ConfigError("SLACK_SIGNING_SECRET is not set: HTTP mode needs the signing "
                              "secret from the Slack app's Basic Information page (or set "
                              "SLACK_APP_TOKEN for Socket Mode)")


_EXPECTS = {
    "database_url": "a PostgreSQL URL such as postgresql://hotdata@db.example.com:5432/app",
    "manager_ids": "comma-separated Slack user ids such as U012ABC,U034DEF",
    "manager_group": "a Slack user-group id such as S0123456789",
    "channel": "a Slack channel id such as C0123456789",
    "slack_bot_token": "the bot token (xoxb-…) from the Slack app's OAuth & Permissions page",
    "slack_signing_secret": "the signing secret from the Slack app's Basic Information page",
    "slack_app_token": "an app-level token (xapp-…) with connections:write",
    "review_extensions": "comma-separated extension names such as vector,pg_trgm,citext",
    "report_cron": "a five-field crontab expression such as '0 */2 * * *'",
    "snapshot_cron": "a five-field crontab expression such as '*/10 * * * *'",
    "drill_cron": "a five-field crontab expression such as '30 3 * * *'",
    "port": "a TCP port number between 1 and 65535",
    "slack_api_url": "the Slack Web API base URL, default https://slack.com/api/",
    "statement_timeout_ms": "milliseconds, from 100 to a day (86400000)",
    "index_budget_mb": "megabytes of new indexes the advisor may propose, more than 0 and at "
                       "most 1048576",
    "migration_layout": "supabase or prisma",
    "prisma_schema": "the path of the application's schema.prisma",
    "lock_timeout_ms": "milliseconds, from 100 to a day (86400000)",
    "apply_retries": "a whole number from 0 to 20",
    "proposal_ttl_hours": "hours, more than 0 and at most a year (8784)",
    "approvals_required": "a whole number from 1 to 10: distinct managers a proposal needs",
    "approvals_required_over_mb": "megabytes, from 0: only tables larger than this need "
                                  "HOTDATA_APPROVALS_REQUIRED managers (others need one)",
    "apply_window": "a five-field crontab expression naming the minutes in which approved "
                    "migrations are built, such as '0-59 1-5 * * *'",
    "apply_growth_limit": "a factor from 1 to 1000: a table grown past this many times its "
                          "size when proposed is approved again",
    "allow_self_approval": "true or false",
    "drill_source": "dump, directory, pgbackrest or barman",
    "drill_pgbackrest_stanza": "the pgBackRest stanza to restore, such as 'main'",
    "drill_barman_server": "the Barman server to restore, such as 'pg'",
    "drill_jobs": "a whole number from 1 to 32",
    "drill_target": "latest, random, or a timestamp with its zone such as "
                    "'2026-12-04T03:00:00+00:00'",
    "drill_fingerprint_max_mb": "megabytes, from 0 to 1048576",
    "rto_target_seconds": "seconds, more than 0 and at most a year",
    "rpo_target_seconds": "seconds, more than 0 and at most a year",
    "backup_max_age_hours": "hours, more than 0 and at most a year (8784)",
    "snapshot_retention_hours": "hours, more than 0 and at most a year (8784)",
    "missed_grace_minutes": "minutes, from 0 to a year",
    "app_jwt_claims": 'a JSON object such as {"sub": "<user uuid>", "role": "authenticated"}',
}


def target_time(value: str) -> datetime:
    """A point-in-time drill's explicit target: an ISO 8601 timestamp with its time zone."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not a timestamp") from None
    if moment.tzinfo is None:
        raise ValueError("the timestamp needs its time zone, such as +00:00")
    return moment


def env_name(field: str) -> str:
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"HOTDATA_{field.upper()}"


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    if field not in Settings.model_fields:
        field = next((name for name in Settings.model_fields if env_name(name) == field), field)
    name = env_name(field) if field in Settings.model_fields else field
    if first["type"] == "missing":
        problem = "is not set"
    else:
        problem = f"is invalid ({' '.join(str(first['msg']).split())})"
    expects = _EXPECTS.get(field)
    return scrub(f"{name} {problem}" + (f": expected {expects}" if expects else ""), [])


def load_settings(**overrides: Any) -> Settings:
    """Read the environment and `.env`; raise ConfigError with one line on a bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
