"""Settings: environment and `.env`, defaults, one-line errors, and secrets kept out of sight."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot import schedule
from bot.dsn import redact_dsn, scrub
from bot.settings import ConfigError, Settings, load_settings

TARGET = "postgresql://hotdata@db.example.com:5432/app"
PASSWORD = "s3cret-Pa55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No HOTDATA_*/SLACK_* variable from the outside, and a working directory without `.env`."""
    for name in list(os.environ):
        if name.upper().startswith(("HOTDATA_", "SLACK_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The ConfigError message load_settings gives for these variables; it must be one line."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- reading the environment -------------------------------------------------------------


def test_manager_ids_are_split_on_commas_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTDATA_DATABASE_URL", TARGET)
    monkeypatch.setenv("HOTDATA_MANAGER_IDS", " U012ABC, U034DEF ,U056GHI,, ")
    assert load_settings().manager_ids == ["U012ABC", "U034DEF", "U056GHI"]


def test_single_manager_id_is_a_one_element_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTDATA_DATABASE_URL", TARGET)
    monkeypatch.setenv("HOTDATA_MANAGER_IDS", "U012ABC")
    assert load_settings().manager_ids == ["U012ABC"]


def test_defaults_with_only_the_target_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTDATA_DATABASE_URL", TARGET)
    settings = load_settings()
    assert settings.report_cron == "0 */2 * * *"
    assert settings.port == 3000
    assert settings.manager_ids == []
    assert settings.state_dsn == TARGET
    assert settings.migrator_dsn == TARGET
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.socket_mode is False


def test_state_and_migrator_urls_override_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTDATA_DATABASE_URL", TARGET)
    monkeypatch.setenv("HOTDATA_STATE_DATABASE_URL", "postgresql://state@db.example.com/hotdata")
    monkeypatch.setenv("HOTDATA_MIGRATOR_DATABASE_URL", "postgresql://migrator@db.example.com/app")
    settings = load_settings()
    assert settings.database_url == TARGET
    assert settings.state_dsn == "postgresql://state@db.example.com/hotdata"
    assert settings.migrator_dsn == "postgresql://migrator@db.example.com/app"


def test_slack_variables_use_bolt_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTDATA_DATABASE_URL", TARGET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-env")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-from-env")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-from-env")
    settings = load_settings()
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == "xoxb-from-env"
    assert settings.slack_signing_secret is not None
    assert settings.slack_signing_secret.get_secret_value() == "signing-from-env"
    assert settings.socket_mode is True


def test_slack_api_url_gets_a_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTDATA_DATABASE_URL", TARGET)
    monkeypatch.setenv("HOTDATA_SLACK_API_URL", "http://127.0.0.1:9999/api")
    assert load_settings().slack_api_url == "http://127.0.0.1:9999/api/"


def test_dotenv_file_in_the_working_directory_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        f"HOTDATA_DATABASE_URL={TARGET}\n"
        "HOTDATA_MANAGER_IDS=U0AAA, U0BBB\n"
        "HOTDATA_PORT=8080\n"
        "HOTDATA_REPORT_CRON=15 * * * *\n"
        "SLACK_BOT_TOKEN=xoxb-from-dotenv\n"
    )
    settings = load_settings()
    assert settings.database_url == TARGET
    assert settings.manager_ids == ["U0AAA", "U0BBB"]
    assert settings.port == 8080
    assert settings.report_cron == "15 * * * *"
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == "xoxb-from-dotenv"


def test_environment_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text(f"HOTDATA_DATABASE_URL={TARGET}\nHOTDATA_PORT=8080\n")
    monkeypatch.setenv("HOTDATA_PORT", "9090")
    assert load_settings().port == 9090


# --- one-line errors naming the variable -------------------------------------------------


def test_missing_database_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch)
    assert message.startswith("HOTDATA_DATABASE_URL is not set")


def test_malformed_report_cron_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET,
                           HOTDATA_REPORT_CRON="every two hours")
    assert message.startswith("HOTDATA_REPORT_CRON is invalid")


def test_out_of_range_report_cron_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET,
                           HOTDATA_REPORT_CRON="61 * * * *")
    assert message.startswith("HOTDATA_REPORT_CRON is invalid")


def test_malformed_drill_cron_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET,
                           HOTDATA_DRILL_CRON="* * *")
    assert message.startswith("HOTDATA_DRILL_CRON is invalid")


def test_malformed_apply_window_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET,
                           HOTDATA_APPLY_WINDOW="0-59 25 * * *")
    assert message.startswith("HOTDATA_APPLY_WINDOW is invalid")
    assert "crontab expression naming the minutes" in message


def test_non_numeric_port_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET, HOTDATA_PORT="abc")
    assert message.startswith("HOTDATA_PORT is invalid")
    assert "between 1 and 65535" in message


def test_port_out_of_range_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET, HOTDATA_PORT="70000")
    assert message.startswith("HOTDATA_PORT is invalid")


@pytest.mark.parametrize("url", ["not a url", "mysql://hotdata@db.example.com/app"])
def test_bad_database_url_names_the_variable(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=url)
    assert message.startswith("HOTDATA_DATABASE_URL is invalid")


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("SLACK_BOT_TOKEN", "", "SLACK_BOT_TOKEN is invalid"),
    ("SLACK_BOT_TOKEN", "   ", "SLACK_BOT_TOKEN is invalid"),
    ("SLACK_BOT_TOKEN", "xapp-1-not-a-bot-token", "does not start with xoxb-"),
    ("SLACK_SIGNING_SECRET", "", "SLACK_SIGNING_SECRET is invalid"),
    ("SLACK_SIGNING_SECRET", "  ", "SLACK_SIGNING_SECRET is invalid"),
    ("SLACK_APP_TOKEN", "xoxb-not-an-app-token", "does not start with xapp-"),
    ("HOTDATA_PROPOSAL_TTL_HOURS", "inf", "HOTDATA_PROPOSAL_TTL_HOURS is invalid"),
    ("HOTDATA_PROPOSAL_TTL_HOURS", "1e308", "HOTDATA_PROPOSAL_TTL_HOURS is invalid"),
    ("HOTDATA_PROPOSAL_TTL_HOURS", "nan", "HOTDATA_PROPOSAL_TTL_HOURS is invalid"),
    ("HOTDATA_INDEX_BUDGET_MB", "inf", "HOTDATA_INDEX_BUDGET_MB is invalid"),
    ("HOTDATA_STATEMENT_TIMEOUT_MS", "99999999999", "HOTDATA_STATEMENT_TIMEOUT_MS is invalid"),
    ("HOTDATA_SNAPSHOT_RETENTION_HOURS", "1e300", "HOTDATA_SNAPSHOT_RETENTION_HOURS is invalid"),
    ("HOTDATA_RTO_TARGET_SECONDS", "-inf", "HOTDATA_RTO_TARGET_SECONDS is invalid"),
    ("HOTDATA_MANAGER_IDS", '["U1","U2"]', "is not a Slack user id"),
    ("HOTDATA_MANAGER_IDS", "U012ABC,alice", "'alice' is not a Slack user id"),
    ("HOTDATA_MANAGER_GROUP", "U012ABC", "HOTDATA_MANAGER_GROUP is invalid"),
    ("HOTDATA_CHANNEL", "#db-ops", "HOTDATA_CHANNEL is invalid"),
])
def test_every_bad_setting_stops_with_one_line_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                         variable: str, value: str,
                                                         says: str) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET, **{variable: value})
    assert message.startswith(f"{variable} is invalid"), message
    assert says in message
    assert ": expected " in message  # and the form it expects


def test_slack_ids_and_secrets_of_the_right_form_are_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"HOTDATA_DATABASE_URL": TARGET, "HOTDATA_MANAGER_IDS": "U012ABC, W0XYZ",
                        "HOTDATA_MANAGER_GROUP": "S0123456789", "HOTDATA_CHANNEL": "C0123ABC",
                        "SLACK_BOT_TOKEN": "xoxb-1-2-abc", "SLACK_APP_TOKEN": "xapp-1-A-2-abc",
                        "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.manager_ids == ["U012ABC", "W0XYZ"] and settings.channel == "C0123ABC"


def test_review_extensions_never_admit_unsafe_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET,
                           HOTDATA_REVIEW_EXTENSIONS="vector, dblink,postgres_fdw")
    assert message.startswith("HOTDATA_REVIEW_EXTENSIONS is invalid")
    assert "dblink, postgres_fdw can reach other databases or the server's files" in message
    monkeypatch.setenv("HOTDATA_REVIEW_EXTENSIONS", "vector, postgis")
    assert load_settings().review_extensions == ["vector", "postgis"]


def test_bad_state_url_names_its_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET,
                           HOTDATA_STATE_DATABASE_URL="not a url")
    assert message.startswith("HOTDATA_STATE_DATABASE_URL is invalid")


@pytest.mark.parametrize("url", [
    f"mysql://hotdata:{PASSWORD}@db.example.com/app",
    f"postgresql://hotdata:{PASSWORD}%zz@db.example.com/app",
])
def test_bad_database_url_error_does_not_show_the_password(
        monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=url)
    assert message.startswith("HOTDATA_DATABASE_URL is invalid")
    assert PASSWORD not in message


def test_bad_slack_api_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET,
                           HOTDATA_SLACK_API_URL="ftp://slack.example.com/")
    assert message.startswith("HOTDATA_SLACK_API_URL is invalid")


# --- what `serve` requires ----------------------------------------------------------------


def test_serve_in_http_mode_requires_the_signing_secret() -> None:
    settings = load_settings(database_url=TARGET, slack_bot_token="xoxb-1")
    with pytest.raises(ConfigError) as caught:
        settings.require_for_serve()
    assert str(caught.value).startswith("SLACK_SIGNING_SECRET is not set")
    assert "\n" not in str(caught.value)


def test_serve_in_socket_mode_does_not_require_the_signing_secret() -> None:
    settings = load_settings(database_url=TARGET, slack_bot_token="xoxb-1",
                             slack_app_token="xapp-1")
    assert settings.socket_mode is True
    settings.require_for_serve()


def test_serve_requires_the_bot_token() -> None:
    settings = load_settings(database_url=TARGET, slack_signing_secret="abc")
    with pytest.raises(ConfigError) as caught:
        settings.require_for_serve()
    assert str(caught.value).startswith("SLACK_BOT_TOKEN is not set")


def test_serve_requirements_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTDATA_DATABASE_URL", TARGET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "abc")
    load_settings().require_for_serve()


# --- secrets ------------------------------------------------------------------------------


def test_secrets_lists_tokens_and_every_dsn_password() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"postgresql://app:{PASSWORD}@db.example.com/app",
        state_database_url="host=db.example.com dbname=hotdata user=state password=state-pw",
        migrator_database_url="postgresql://migrator@db.example.com/app?password=mig-pw",
        drill_database_url="postgresql://drill:p%40ss@db.example.com/postgres",
        slack_bot_token="xoxb-bot",
        slack_signing_secret="signing",
        slack_app_token="xapp-app",
    )
    assert set(settings.secrets()) == {
        PASSWORD, "state-pw", "mig-pw", "p@ss", "xoxb-bot", "signing", "xapp-app"}


def test_secrets_is_empty_without_passwords_or_tokens() -> None:
    settings = Settings(_env_file=None, database_url=TARGET)  # type: ignore[call-arg]
    assert settings.secrets() == []


def test_settings_repr_hides_slack_secrets() -> None:
    settings = Settings(_env_file=None, database_url=TARGET,  # type: ignore[call-arg]
                        slack_bot_token="xoxb-very-secret", slack_signing_secret="sign-secret")
    shown = repr(settings)
    assert "xoxb-very-secret" not in shown
    assert "sign-secret" not in shown


# --- redact_dsn and scrub -----------------------------------------------------------------


@pytest.mark.parametrize(("dsn", "shown"), [
    (f"postgresql://alice:{PASSWORD}@db.example.com:6543/app",
     "postgresql://alice@db.example.com:6543/app"),
    (f"postgres://alice:{PASSWORD}@db.example.com/app",
     "postgresql://alice@db.example.com/app"),
    (f"host=db.example.com port=5432 dbname=app user=alice password={PASSWORD}",
     "postgresql://alice@db.example.com:5432/app"),
    (f"postgresql://alice@db.example.com/app?password={PASSWORD}&sslmode=require",
     "postgresql://alice@db.example.com/app"),
    ("postgresql://alice@/app?host=/var/run/postgresql",
     "postgresql://alice@[/var/run/postgresql]/app"),
])
def test_redact_dsn_shows_no_password(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert PASSWORD not in redact_dsn(dsn)


def test_redact_dsn_of_garbage_shows_nothing_of_it() -> None:
    shown = redact_dsn(f"mysql://alice:{PASSWORD}@db/app")
    assert PASSWORD not in shown
    assert shown == "<unparseable connection string>"


def test_scrub_masks_url_passwords_without_being_told_them() -> None:
    text = (f"could not connect to postgresql://alice:{PASSWORD}@db.example.com/app "
            f"or postgres://bob:other-pw@db2/app")
    scrubbed = scrub(text, [])
    assert PASSWORD not in scrubbed
    assert "other-pw" not in scrubbed
    assert "postgresql://alice:***@db.example.com/app" in scrubbed
    assert "postgres://bob:***@db2/app" in scrubbed


def test_scrub_masks_key_value_passwords_from_settings_secrets() -> None:
    dsn = f"host=db.example.com dbname=app user=alice password={PASSWORD}"
    settings = Settings(_env_file=None, database_url=dsn,  # type: ignore[call-arg]
                        slack_bot_token="xoxb-bot-token")
    text = f"failed with {dsn}; token xoxb-bot-token"
    scrubbed = scrub(text, settings.secrets())
    assert PASSWORD not in scrubbed
    assert "xoxb-bot-token" not in scrubbed
    assert "password=***" in scrubbed


def test_scrub_leaves_text_without_secrets_alone() -> None:
    text = "postgresql://alice@db.example.com/app is reachable"
    assert scrub(text, ["", "unrelated"]) == text


def test_crontab_weekdays_count_from_sunday() -> None:
    from datetime import UTC, datetime

    from bot.cron import cron_trigger

    thursday = datetime(2026, 11, 26, tzinfo=UTC)
    for expression, weekday in (("0 9 * * 1", "Mon"), ("0 9 * * 0", "Sun"),
                                ("0 9 * * 7", "Sun"), ("0 9 * * 6", "Sat"),
                                ("0 9 * * 5-6", "Fri")):
        fire = cron_trigger(expression).get_next_fire_time(None, thursday)
        assert fire is not None and fire.strftime("%a") == weekday, expression


def test_unknown_drill_source_lists_the_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, HOTDATA_DATABASE_URL=TARGET, HOTDATA_DRILL_SOURCE="wal-g")
    assert message.startswith("HOTDATA_DRILL_SOURCE is invalid")
    assert message.endswith("expected dump, directory, pgbackrest or barman")


def test_pgbackrest_drills_are_scheduled_without_a_scratch_server() -> None:
    """A pgBackRest drill restores into its own private cluster; dump drills need a server."""
    base = {"database_url": "postgresql://h/db", "drill_cron": "30 3 * * *", "channel": "C1"}
    names = {job.name for job in schedule.jobs(Settings(_env_file=None, **base))}  # type: ignore[arg-type]
    assert "drill" not in names
    pgbackrest = Settings(_env_file=None, drill_source="pgbackrest",  # type: ignore[call-arg]
                          drill_pgbackrest_stanza="main", **base)
    assert "drill" in {job.name for job in schedule.jobs(pgbackrest)}
