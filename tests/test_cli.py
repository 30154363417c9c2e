"""The `hotdata` console script, run as a real subprocess against the throwaway cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot import pgcluster, tools
from bot.dsn import redact_dsn
from bot.resources import resource_dir
from tests.harness import offers_hypopg

HOTDATA = Path(sys.executable).parent / "hotdata"
PASSWORD = "s3cret-Pa55"


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without HOTDATA_*/SLACK_* variables, plus `extra`.

    COLUMNS is wide so rich never folds a URL (or a leaked password) across lines.
    """
    env = tools.clean_env()
    env["COLUMNS"] = "400"
    env.update(extra)
    return env


def hotdata(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HOTDATA), *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=90, check=False)


def create_role(pg: pgcluster.Cluster, database: str, *, monitor: bool) -> Iterator[str]:
    """A LOGIN role with a password that may connect to (and create schemas in) `database`,
    member of pg_monitor when `monitor`; yields the URL carrying its password."""
    role = f"doctor_{uuid.uuid4().hex[:8]}"
    dbname = database.rsplit("/", 1)[1]
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(dbname), sql.Identifier(role)))
        if monitor:
            conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(role)))
    try:
        yield pg.url(dbname, user=role, password=PASSWORD)
    finally:
        with psycopg.connect(pg.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def password_url(pg: pgcluster.Cluster, database: str) -> Iterator[str]:
    """A monitoring role (pg_monitor, as an analysis role is usually set up) with a password."""
    yield from create_role(pg, database, monitor=True)


@pytest.fixture
def plain_password_url(pg: pgcluster.Cluster, database: str) -> Iterator[str]:
    """A role with a password and nothing beyond CONNECT and CREATE on the database."""
    yield from create_role(pg, database, monitor=False)


def server_major(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.info.server_version // 10000


def assert_hypopg_reported(check: dict[str, Any], url: str) -> None:
    """doctor's HypoPG line for the database at `url`: installed where its server offers HypoPG
    (the test templates create it there), else `not available`, with the package to install
    and the scratch copy that does without it. Never a failure: the advisor is optional."""
    major = server_major(url)
    assert check["ok"] is True
    if offers_hypopg(url):
        assert check["state"] == "ok"
        assert check["detail"].startswith("available, installed")
    else:
        assert check["state"] == "warn"
        assert check["detail"].startswith(f"not available on the server (PostgreSQL {major}): "
                                          "install it for what-if indexes for the advisor")
        assert f"postgresql-{major}-hypopg" in check["detail"]
        assert "HOTDATA_SCRATCH_DATABASE_URL" in check["detail"]


# --- doctor -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_doctor_with_a_password_url_is_healthy_and_never_shows_the_password(
        tmp_path: Path, password_url: str, fmt: str) -> None:
    upgrade = hotdata(tmp_path, "db", "upgrade", "--dsn", password_url)
    assert upgrade.returncode == 0, upgrade.stderr
    doctor = hotdata(tmp_path, "doctor", "--dsn", password_url, "--format", fmt)
    output = doctor.stdout + doctor.stderr
    assert PASSWORD not in output
    assert "Traceback" not in output
    assert doctor.returncode == 0, output
    assert redact_dsn(password_url) in doctor.stdout
    assert "state schema" in doctor.stdout


def test_doctor_json_reports_the_extensions_and_state(tmp_path: Path, password_url: str) -> None:
    hotdata(tmp_path, "db", "upgrade", "--dsn", password_url)
    doctor = hotdata(tmp_path, "doctor", "--dsn", password_url, "--format", "json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["ok"] is True
    assert checks["target database"]["ok"] is True
    assert checks["pg_stat_statements"]["ok"] is True
    assert checks["pg_stat_statements"]["state"] == "ok"
    assert_hypopg_reported(checks["hypopg"], password_url)
    assert checks["state schema"]["state"] == "ok"
    assert checks["slack"]["state"] == "warn"
    assert "SLACK_BOT_TOKEN" in checks["slack"]["detail"]
    assert checks["analysis role"]["state"] == "ok"


def test_doctor_warns_when_the_analysis_role_is_a_superuser(tmp_path: Path,
                                                            database: str) -> None:
    hotdata(tmp_path, "db", "upgrade", "--dsn", database)
    doctor = hotdata(tmp_path, "doctor", "--dsn", database, "--format", "json")
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert checks["analysis role"]["state"] == "warn"
    assert checks["analysis role"]["detail"].startswith("postgres is a superuser: use a "
                                                        "least-privilege role (SECURITY.md)")


def test_doctor_for_a_role_without_pg_monitor_reports_instead_of_crashing(
        tmp_path: Path, plain_password_url: str) -> None:
    upgrade = hotdata(tmp_path, "db", "upgrade", "--dsn", plain_password_url)
    assert upgrade.returncode == 0, upgrade.stderr
    doctor = hotdata(tmp_path, "doctor", "--dsn", plain_password_url, "--format", "json")
    output = doctor.stdout + doctor.stderr
    assert PASSWORD not in output
    assert "Traceback" not in output
    assert doctor.returncode == 0, output
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert checks["pg_stat_statements"]["ok"] is True
    assert checks["hypopg"]["ok"] is True


def test_doctor_before_db_upgrade_fails_on_the_state_schema(
        tmp_path: Path, database: str) -> None:
    doctor = hotdata(tmp_path, "doctor", "--format", "json", HOTDATA_DATABASE_URL=database)
    assert doctor.returncode == 1
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert checks["state schema"]["ok"] is False
    assert "hotdata db upgrade" in checks["state schema"]["detail"]
    assert checks["target database"]["ok"] is True


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_doctor_against_an_unreachable_server_fails_naming_the_redacted_url(
        tmp_path: Path, fmt: str) -> None:
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:{pgcluster.free_port()}/nowhere"
    doctor = hotdata(tmp_path, "doctor", "--dsn", url, "--format", fmt)
    output = doctor.stdout + doctor.stderr
    assert doctor.returncode == 1, output
    assert redact_dsn(url) in output
    assert PASSWORD not in output
    assert "Traceback" not in output


# --- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize("command", [["doctor"], ["db", "upgrade"], ["serve"]])
def test_missing_database_url_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    result = hotdata(tmp_path, *command)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hotdata: configuration error: HOTDATA_DATABASE_URL")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_serve_without_signing_secret_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = hotdata(tmp_path, "serve", HOTDATA_DATABASE_URL="postgresql://hotdata@127.0.0.1/app",
                     SLACK_BOT_TOKEN="xoxb-0000-test-token")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hotdata: configuration error: SLACK_SIGNING_SECRET")
    assert "Traceback" not in result.stderr


def test_serve_without_bot_token_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = hotdata(tmp_path, "serve", HOTDATA_DATABASE_URL="postgresql://hotdata@127.0.0.1/app",
                     SLACK_SIGNING_SECRET="abc")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hotdata: configuration error: SLACK_BOT_TOKEN")


def test_bad_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = hotdata(tmp_path, "doctor", HOTDATA_DATABASE_URL="postgresql://hotdata@127.0.0.1/app",
                     HOTDATA_PORT="abc")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hotdata: configuration error: HOTDATA_PORT")


@pytest.mark.parametrize("blank", ["", "   "])
def test_serve_with_a_blank_slack_setting_is_one_line_and_exit_2(tmp_path: Path,
                                                                 blank: str) -> None:
    for variable in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        env = {"HOTDATA_DATABASE_URL": "postgresql://hotdata@127.0.0.1/app",
               "SLACK_BOT_TOKEN": "xoxb-0000-test-token", "SLACK_SIGNING_SECRET": "abc",
               variable: blank}
        result = hotdata(tmp_path, "serve", **env)
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"hotdata: configuration error: {variable} is invalid")


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, database: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = hotdata(tmp_path, "serve", "--host", "127.0.0.1", HOTDATA_DATABASE_URL=database,
                         SLACK_BOT_TOKEN="xoxb-0000-test-token", SLACK_SIGNING_SECRET="abc",
                         HOTDATA_PORT=str(port))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (f"hotdata: configuration error: HOTDATA_PORT {port} cannot be used on 127.0.0.1: "
            in result.stderr)
    assert result.stderr.strip().endswith("choose a free port")


# --- db upgrade ---------------------------------------------------------------------------


def test_db_upgrade_twice_says_up_to_date(tmp_path: Path, database: str) -> None:
    first = hotdata(tmp_path, "db", "upgrade", HOTDATA_DATABASE_URL=database)
    assert first.returncode == 0, first.stderr
    shipped = sorted(p.name for p in resource_dir("migrations").glob("*.sql"))
    assert f"applied {len(shipped)} migration(s): {', '.join(shipped)}" in first.stdout
    second = hotdata(tmp_path, "db", "upgrade", HOTDATA_DATABASE_URL=database)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert "applied" not in second.stdout


def test_db_upgrade_reads_the_dotenv_in_the_working_directory(
        tmp_path: Path, database: str) -> None:
    (tmp_path / ".env").write_text(f"HOTDATA_DATABASE_URL={database}\n")
    result = hotdata(tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "0001_init.sql" in result.stdout
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT count(*) FROM hotdata.schema_migrations").fetchone()
    assert row == (len(list(resource_dir("migrations").glob("*.sql"))),)


def test_db_upgrade_against_an_unreachable_server_exits_1(tmp_path: Path) -> None:
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:{pgcluster.free_port()}/nowhere"
    result = hotdata(tmp_path, "db", "upgrade", "--dsn", url)
    assert result.returncode == 1
    assert result.stderr.startswith("hotdata: cannot connect to the state database "
                                    + redact_dsn(url))
    assert PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# --- help ---------------------------------------------------------------------------------


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = hotdata(tmp_path, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: hotdata")
    for command in ("serve", "analyze", "propose", "drill", "report", "lint", "db", "demo",
                    "doctor"):
        assert command in result.stdout


def test_analyze_help_shows_its_options(tmp_path: Path) -> None:
    result = hotdata(tmp_path, "analyze", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: hotdata analyze")
    for option in ("--top", "--dsn", "--format"):
        assert option in result.stdout


def test_module_entry_point_matches_the_console_script(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot.cli", "--help"], cwd=tmp_path,
                            env=clean_env(), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0
    assert "doctor" in result.stdout
