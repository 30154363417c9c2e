"""Index proposals end to end on a real PostgreSQL and the fake Slack Web API: the allow-list,
migration files and squawk, manager approval through signed Slack requests, exactly-once
decisions (two managers, replays), rejection with a reason, preflight and expiry, tampered
state, the lock timeout, a real SIGKILL in the middle of CREATE INDEX CONCURRENTLY followed by
reconcile, and `hotdata propose` from the command line."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from slack_sdk.models.views import View

from bot import pgcluster, squawk, tools, units
from bot.advisor.model import Candidate
from bot.advisor.pipeline import analyze
from bot.analysis.model import Analysis
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.flows import approvals
from bot.flows import proposals as service
from bot.flows.analysis import record
from bot.proposals import allowlist, binding
from bot.proposals import apply as applying
from bot.proposals.model import Proposal
from bot.render.proposals import APPLY_NOW, APPROVE, REJECT, ROLLBACK
from bot.sample import hotdash as sample
from bot.schedule import Scheduler
from bot.settings import Settings
from tests.harness import (
    BotUnderTest,
    advised,
    advised_env,
    clone,
    drop,
    scratch_copy,
    watched_file,
)

ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "proposals-test-signing-secret-0001"
BOT_TOKEN = "xoxb-0000-proposals"
ENGINEER, MANAGER, BOSS, LEAD = "U0ENGINEER", "U0MANAGER", "U0BOSS", "U0LEAD"
GROUP = "S0DBLEADS"
# Two of the HotDash recommendations (tests/test_advisor.py pins both).
UNREAD = "idx_notifications_user_id_created_at_desc_not_read"
PENDING = "idx_decision_log_created_at_status_pending"
CIC_RUNNING_SQL = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'hotdata-migrator'
  AND state = 'active' AND query ILIKE 'CREATE INDEX CONCURRENTLY%'
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any HOTDATA_/SLACK_ setting, plus `extra`."""
    return {**tools.clean_env(), **extra}


def run_workload(url: str) -> None:
    """The dashboard's read mix (fixed seed), with the load forgotten first."""
    with psycopg.connect(url, autocommit=True) as conn:
        plan = sample.workload_plan(conn, seed=7, scale_weights=0.1)
        sample.reset_statistics(conn)
        sample.run(conn, plan)


def tiles_file(directory: Path) -> Path:
    path = directory / "watched.toml"
    path.write_text(sample.watched_queries_toml())
    return path


@pytest.fixture(scope="module")
def hotdash_analysis(pg: pgcluster.Cluster, hotdash_template: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    """One analysis (with recommendations) of a HotDash copy whose workload ran; each test
    records it in its own fresh copy, the recommendations being the same there. Without HypoPG,
    costed on a scratch copy (harness.advised)."""
    name = clone(pg, hotdash_template)
    try:
        url = pg.url(name)
        run_workload(url)
        config = advised(url, watched_queries=tiles_file(tmp_path_factory.mktemp("tiles")))
        analysis = asyncio.run(analyze(config, top=10))
    finally:
        drop(pg, name)
    assert {r["index"] for r in analysis.recommendations} >= {UNREAD, PENDING}
    return analysis


class Flow:
    """The bot on a HotDash copy with a stored analysis, and what a test looks at."""

    def __init__(self, bot: BotUnderTest) -> None:
        self.bot = bot
        self.slack: FakeSlack = bot.slack
        self.settings = bot.settings
        self.url = bot.settings.database_url
        # the target, and its scratch copy when there is one (a server without HypoPG)
        self.databases = [self.url, *filter(None, [bot.settings.scratch_database_url])]

    def query(self, text: str, params: tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(text, params).fetchall()

    def execute(self, text: str, params: tuple[Any, ...] | None = None) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(text, params)

    def propose(self, user: str) -> dict[str, dict[str, Any]]:
        """`/hotdata propose` typed by `user`; the proposals by index name."""
        reply = self.bot.slash("propose", user=user)
        assert reply.status == 200 and "Proposing" in reply.text
        [done] = self.slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
        assert "index migration(s) in <#C0HOTDATA>" in done.params["text"]
        rows = self.query("SELECT * FROM hotdata.proposals ORDER BY id")
        return {row["index_name"]: row for row in rows}

    def click(self, action: str, proposal_id: int, user: str, value: str | None = None) -> str:
        """A signed button click (Approve carries the statement digest its card shows, the
        proposal's, unless `value` says otherwise); the ephemeral answer the user gets."""
        if value is None:
            value = str(proposal_id)
            if action == APPROVE:
                [row] = self.query("SELECT sql_sha256 FROM hotdata.proposals WHERE id = %s",
                                   (proposal_id,)) or [{"sql_sha256": "0" * 64}]
                value = binding.button_value(proposal_id, row["sql_sha256"])
        reply = self.bot.requests.click(action, value, user=user)
        assert reply.status == 200
        [answer] = self.slack.wait_for(f"response_url/{reply.response_key}", timeout=60)
        assert answer.params["response_type"] == "ephemeral"
        assert answer.params["replace_original"] in (False, "false")
        return str(answer.params["text"])

    def proposal(self, proposal_id: int) -> dict[str, Any]:
        [row] = self.query("SELECT * FROM hotdata.proposals WHERE id = %s", (proposal_id,))
        return row

    def audit(self, proposal_id: int) -> list[str]:
        rows = self.query("SELECT action FROM hotdata.audit_log WHERE proposal_id = %s "
                          "ORDER BY id", (proposal_id,))
        return [r["action"] for r in rows]

    def indexes(self, table: str) -> dict[str, bool]:
        """Index name → indisvalid, for `table`."""
        rows = self.query("SELECT c.relname, i.indisvalid FROM pg_index i "
                          "JOIN pg_class c ON c.oid = i.indexrelid "
                          "WHERE i.indrelid = to_regclass(%s)", (table,))
        return {r["relname"]: r["indisvalid"] for r in rows}

    def invalid_indexes(self) -> list[str]:
        rows = self.query("SELECT indexrelid::regclass::text AS name FROM pg_index "
                          "WHERE NOT indisvalid")
        return [r["name"] for r in rows]

    def updates(self, ts: str) -> list[dict[str, Any]]:
        return [c.params for c in self.slack.answered("chat.update") if c.params.get("ts") == ts]

    def replies(self, ts: str) -> list[str]:
        return [c.params["text"] for c in self.slack.answered("chat.postMessage")
                if c.params.get("thread_ts") == ts]


def context(blocks: list[dict[str, Any]]) -> str:
    return " ".join(e["text"] for b in blocks if b["type"] == "context" for e in b["elements"])


def has_buttons(blocks: list[dict[str, Any]]) -> bool:
    """Whether the card offers a decision (Approve / Reject)."""
    return any(b["type"] == "actions" and b.get("block_id") == "decision" for b in blocks)


@pytest.fixture
def flow(hotdash: str, fake_slack_server: FakeSlackServer, slack: FakeSlack,
         hotdash_analysis: Analysis) -> Iterator[Flow]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=hotdash, slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fake_slack_server.api_url, channel="C0HOTDATA",
        manager_ids=[MANAGER, BOSS], scratch_database_url=scratch_copy(hotdash))
    running = BotUnderTest(settings, slack).start()
    try:
        running.run(record(settings, hotdash_analysis, ENGINEER))
        yield Flow(running)
    finally:
        running.stop()


# --- the allow-list ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "says"), [
    ("DROP TABLE public.notifications", "DROP TABLE statements are never applied"),
    ("DELETE FROM public.notifications", "DELETE statements are never applied"),
    ("UPDATE public.notifications SET read = true", "UPDATE statements are never applied"),
    ("ALTER TABLE public.notifications ADD COLUMN x int", "ALTER TABLE statements are never"),
    ("CREATE TABLE public.x (a int)", "CREATE TABLE statements are never applied"),
    ("CREATE INDEX IF NOT EXISTS i ON public.notifications (kind)",
     "CREATE INDEX without CONCURRENTLY would block writes"),
    ("CREATE INDEX CONCURRENTLY i ON public.notifications (kind)", "must say IF NOT EXISTS"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON public.notifications (kind); "
     "DROP TABLE public.notifications", "expected exactly one statement, found 2"),
    ("-- x\nDROP TABLE t", "DROP TABLE statements are never applied"),
    ("/* */; DROP TABLE t", "DROP TABLE statements are never applied"),
    ("DROP INDEX public.i", "only DROP INDEX CONCURRENTLY IF EXISTS is allowed"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (", "does not parse"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (public.leak(secret))",
     "the index calls public.leak; hotdata applies plain indexes on columns only"),
    ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c)", "the index is UNIQUE"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c) TABLESPACE slow",
     "the index names the tablespace slow"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c) WITH (fillfactor = 10)",
     "the index sets storage parameters"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c) WHERE " + "NOT " * 40 + "d",
     "the index nests its predicate more than 32 levels deep"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c) WHERE " + "NOT " * 3000 + "d",
     "nests"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c) WHERE " + "d OR (" * 3000 + "d"
     + ")" * 3000, "nests"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c) WHERE lower(d) = 'x'",
     "the index calls lower"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t ((c::public.checked))",
     "the index holds a TypeCast"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c public.evil_ops)",
     "names an operator class or collation for c"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c) WHERE c OPERATOR(public.===) 'x'",
     "uses the operator public.==="),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t USING evilam (c)",
     "uses the access method evilam"),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c) WHERE c = current_user",
     "holds a SQLValueFunction"),
])
def test_allowlist_refuses_everything_but_online_index_ddl(text: str, says: str) -> None:
    with pytest.raises(allowlist.Refused) as refused:
        allowlist.check(text)
    assert str(refused.value).startswith("refused: ")
    assert says in str(refused.value)


def test_allowlist_accepts_the_three_allowed_statements() -> None:
    for text in ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON public.t (c) WHERE NOT d; -- ok",
                 "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c, d DESC NULLS LAST) INCLUDE "
                 "(e) WHERE status IN ('a', 'b') AND x IS NULL AND (n >= 3 OR f IS NOT TRUE)",
                 "DROP INDEX CONCURRENTLY IF EXISTS public.i", "ANALYZE public.t"):
        allowlist.check(text)


# --- one open proposal per index --------------------------------------------------------------

def test_twenty_concurrent_proposes_leave_one_open_proposal_per_index(flow: Flow) -> None:
    container = flow.bot.container

    async def together() -> list[list[Any]]:
        return list(await asyncio.gather(*(service.propose(container, f"U0ENG{n:02d}",
                                                           post=False) for n in range(20))))

    created = flow.bot.run(together(), timeout=120)
    rows = flow.query("SELECT table_name, index_name, count(*) AS n FROM hotdata.proposals "
                      "WHERE status = 'pending' GROUP BY 1, 2")
    assert rows and all(r["n"] == 1 for r in rows), rows
    assert sum(len(c) for c in created) == len(rows)  # each call says what it created
    audited = flow.query("SELECT count(*) AS n FROM hotdata.audit_log WHERE action = 'proposed'")
    assert audited == [{"n": len(rows)}]
    # and the state schema holds the line even against a writer that skips the check
    [row] = flow.query("SELECT * FROM hotdata.proposals WHERE status = 'pending' LIMIT 1")
    with pytest.raises(psycopg.errors.UniqueViolation):
        flow.execute("INSERT INTO hotdata.proposals (table_name, index_name, sql, sql_sha256) "
                     "VALUES (%s, %s, %s, %s)", (row["table_name"], row["index_name"],
                                                 row["sql"], row["sql_sha256"]))


# --- approval through the signed Slack flow ---------------------------------------------------

def test_only_managers_decide_and_an_approval_builds_the_index(flow: Flow,
                                                               tmp_path: Path) -> None:
    flow.settings.migrations_dir = tmp_path / "approved"
    proposals = flow.propose(MANAGER)  # a manager proposes: they may not approve it themselves
    posted = [c.params for c in flow.slack.answered("chat.postMessage")]
    assert len(posted) == len(proposals)
    for row in proposals.values():
        [message] = [m for m in posted
                     if m["text"].startswith(f"Index migration #{row['id']} (pending): ")]
        assert message["channel"] == "C0HOTDATA" and row["status"] == "pending"
        assert row["channel"] == "C0HOTDATA" and row["message_ts"]
        [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
        # Approve carries the statement's digest, which the card shows too
        assert row["sql_sha256"] == binding.digest(row["sql"])
        assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
            (APPROVE, f"{row['id']}:{row['sql_sha256'][:12]}"), (REJECT, str(row["id"]))]
        assert f"statement sha256 `{row['sql_sha256'][:12]}`" in context(message["blocks"])
        assert "Lint (squawk):* clean" in json.dumps(message["blocks"])
    pending = proposals[PENDING]
    pid, ts = pending["id"], pending["message_ts"]

    # a non-manager's click is refused, privately, and audited; nothing is applied
    refusal = flow.click(APPROVE, pid, ENGINEER)
    assert refusal.startswith("Only managers may approve")
    assert flow.proposal(pid)["status"] == "pending"
    assert flow.audit(pid) == ["proposed", "refused"]
    # the proposer, although a manager, may not approve their own migration
    refusal = flow.click(APPROVE, pid, MANAGER)
    assert refusal.startswith("You proposed this migration")
    assert flow.proposal(pid)["status"] == "pending"
    assert PENDING not in flow.indexes("public.decision_log")
    assert flow.updates(ts) == []

    # another manager approves: the index is built online and its effect measured
    answer = flow.click(APPROVE, pid, BOSS)
    assert answer == f"Approved index migration #{pid}; the result is in the channel."
    assert flow.indexes("public.decision_log")[PENDING] is True
    final = flow.proposal(pid)
    assert final["status"] == "applied" and final["decided_by"] == BOSS
    result = final["result"]
    assert 0 < result["after_ms"] < result["before_ms"]
    assert result["size_bytes"] > 0 and result["attempts"] == 1
    assert flow.audit(pid) == ["proposed", "refused", "refused", "approved", "applied"]
    [audit_row] = flow.query("SELECT actor, sql, outcome FROM hotdata.audit_log "
                             "WHERE proposal_id = %s AND action = 'approved'", (pid,))
    assert audit_row == {"actor": BOSS, "sql": pending["sql"], "outcome": "approved"}

    updates = flow.updates(ts)
    assert "applying" in context(updates[0]["blocks"])
    # the first build on this server is estimated from the scratch copy's, if it was built
    scratch = pending["evidence"].get("build_seconds")
    assert ("as long as on the scratch copy" in context(updates[0]["blocks"])) == (
        scratch is not None)
    last = updates[-1]
    assert last["text"].startswith(f"Index migration #{pid} (applied)")
    assert not has_buttons(last["blocks"])
    assert f"Applied (approved by <@{BOSS}>)" in context(last["blocks"])
    [reply] = flow.replies(ts)
    assert (f"took {result['before_ms']} ms before and {result['after_ms']} ms after"
            in reply)
    # with HOTDATA_MIGRATIONS_DIR, the approved migration is written for the repository
    [written] = (tmp_path / "approved").glob(f"*_hotdata_{PENDING}.sql")
    assert pending["sql"] in written.read_text()
    # the other proposals were left alone
    assert {flow.proposal(r["id"])["status"] for r in proposals.values() if r["id"] != pid} == {
        "pending"}

    # with HOTDATA_ALLOW_SELF_APPROVAL the proposer may approve their own
    flow.settings.allow_self_approval = True
    unread = proposals[UNREAD]
    assert flow.click(APPROVE, unread["id"], MANAGER).startswith("Approved index migration")
    assert flow.proposal(unread["id"])["status"] == "applied"
    assert flow.indexes("public.notifications")[UNREAD] is True
    # the next build is estimated at the pace of the one before it on this server
    rate = pending["table_bytes"] / result["build_seconds"]
    applying_line = context(flow.updates(unread["message_ts"])[0]["blocks"])
    assert (f"build estimated at about {round(unread['table_bytes'] / rate, 1):g} s, at the "
            "pace of the last 1 build(s) on this server") in applying_line


def test_manager_group_members_may_approve_and_the_group_fails_closed(flow: Flow) -> None:
    flow.settings.manager_group = GROUP
    flow.slack.usergroups[GROUP] = [LEAD]
    proposals = flow.propose(ENGINEER)
    pid = proposals[PENDING]["id"]

    # Slack cannot say who is in the group: the group grants nothing
    flow.slack.fail("usergroups.users.list", status=502)
    assert flow.click(APPROVE, pid, LEAD).startswith("Only managers may approve")
    [failed] = flow.slack.attempts("usergroups.users.list")
    assert failed.status == 502 and failed.params["usergroup"] == GROUP
    assert flow.proposal(pid)["status"] == "pending"
    assert flow.audit(pid) == ["proposed", "refused"]
    assert PENDING not in flow.indexes("public.decision_log")

    # Slack answers: a member of the group is a manager
    assert flow.click(APPROVE, pid, LEAD).startswith("Approved index migration")
    final = flow.proposal(pid)
    assert final["status"] == "applied" and final["decided_by"] == LEAD
    assert flow.indexes("public.decision_log")[PENDING] is True
    # someone outside the group still is not
    assert flow.click(APPROVE, proposals[UNREAD]["id"], ENGINEER).startswith("Only managers")


def test_two_managers_at_once_and_a_replayed_click_apply_once(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    pid = proposals[PENDING]["id"]
    requests = flow.bot.requests
    assert requests is not None

    barrier = threading.Barrier(2)
    keys: dict[str, str] = {}

    def click(user: str) -> None:
        barrier.wait()
        reply = requests.click(APPROVE, binding.button_value(pid, proposals[PENDING][
            "sql_sha256"]), user=user)
        assert reply.status == 200
        keys[user] = reply.response_key

    threads = [threading.Thread(target=click, args=(user,)) for user in (MANAGER, BOSS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    answers = {user: flow.slack.wait_for(f"response_url/{key}", timeout=60)[0].params["text"]
               for user, key in keys.items()}
    final = flow.proposal(pid)
    winner = final["decided_by"]
    [loser] = {MANAGER, BOSS} - {winner}
    assert answers[winner].startswith(f"Approved index migration #{pid}")
    assert answers[loser].startswith(f"Index migration #{pid} was already approved by "
                                     f"<@{winner}>")
    assert final["status"] == "applied"
    assert flow.audit(pid) == ["proposed", "approved", "applied"]
    assert flow.indexes("public.decision_log")[PENDING] is True

    # the same signed request, byte for byte, sent again within Slack's 5 minutes
    sent: list[tuple[str, dict[str, str], str]] = []
    post = requests.post

    def recording(body: str, headers: dict[str, str], key: str = "") -> Any:
        sent.append((body, headers, key))
        return post(body, headers, key)

    requests.post = recording  # type: ignore[method-assign]
    try:
        first = requests.click(APPROVE, binding.button_value(
            proposals[UNREAD]["id"], proposals[UNREAD]["sql_sha256"]), user=BOSS)
    finally:
        del requests.post  # back to the class's method
    [(body, headers, key)] = sent
    replayed = requests.post(body, headers, key)
    assert first.status == replayed.status == 200
    answers_to_both = [c.params["text"] for c in
                       flow.slack.wait_for(f"response_url/{key}", count=2, timeout=60)]
    assert sum(a.startswith("Approved index migration") for a in answers_to_both) == 1
    assert sum("was already approved by <@U0BOSS>" in a for a in answers_to_both) == 1
    uid = proposals[UNREAD]["id"]
    assert flow.audit(uid) == ["proposed", "approved", "applied"]
    assert flow.proposal(uid)["status"] == "applied"


def test_two_approvals_required_two_distinct_managers_apply_once(flow: Flow) -> None:
    flow.settings.approvals_required = 2
    flow.settings.allow_self_approval = True  # even so, the proposer never counts
    flow.settings.manager_ids = [MANAGER, BOSS, LEAD]
    proposals = flow.propose(MANAGER)
    pending = proposals[PENDING]
    pid, ts = pending["id"], pending["message_ts"]
    assert pending["approvals_required"] == 2
    [posted] = [c.params for c in flow.slack.answered("chat.postMessage")
                if c.params["text"].startswith(f"Index migration #{pid} (pending): ")]
    assert "*Approvals:* 0 of 2 (distinct managers" in json.dumps(posted["blocks"])

    assert flow.click(APPROVE, pid, MANAGER) == (
        f"You proposed index migration #{pid}: it needs 2 other managers' approvals, and "
        "yours never counts.")
    assert flow.click(APPROVE, pid, BOSS) == (
        f"Your approval of index migration #{pid} is recorded: 1 of 2; another manager must "
        "approve too.")
    # one manager is not enough, however often they click
    assert flow.click(APPROVE, pid, BOSS) == (
        f"You have already approved index migration #{pid}: 1 of 2; another manager must "
        "approve too.")
    assert flow.proposal(pid)["status"] == "pending"
    assert PENDING not in flow.indexes("public.decision_log")
    card = flow.updates(ts)[-1]
    assert f"*Approvals:* 1 of 2 — <@{BOSS}>" in json.dumps(card["blocks"], ensure_ascii=False)
    assert has_buttons(card["blocks"])

    # the second distinct manager applies it, exactly once
    assert flow.click(APPROVE, pid, LEAD).startswith(f"Approved index migration #{pid}")
    final = flow.proposal(pid)
    assert final["status"] == "applied" and final["decided_by"] == LEAD
    assert flow.indexes("public.decision_log")[PENDING] is True
    assert flow.click(APPROVE, pid, BOSS) == (f"Index migration #{pid} was already approved "
                                              f"by <@{LEAD}> and applied.")
    assert flow.audit(pid) == ["proposed", "refused", "approval", "approved", "applied"]
    [approved] = flow.query("SELECT detail FROM hotdata.audit_log WHERE proposal_id = %s "
                            "AND action = 'approved'", (pid,))
    assert approved["detail"]["approvers"] == [BOSS, LEAD]

    # a reject by any manager ends a proposal that is waiting for its second approval
    unread = proposals[UNREAD]
    assert "1 of 2" in flow.click(APPROVE, unread["id"], BOSS)
    assert flow.bot.run(approvals.reject(flow.bot.container, unread["id"], LEAD, "not now")) == (
        f"Rejected index migration #{unread['id']}.")
    assert flow.click(APPROVE, unread["id"], MANAGER).startswith(
        f"Index migration #{unread['id']} was already rejected")
    assert UNREAD not in flow.indexes("public.notifications")


def test_only_tables_over_the_size_need_two_managers(flow: Flow) -> None:
    flow.settings.approvals_required = 2
    [small] = flow.query("SELECT pg_total_relation_size('public.decision_log') AS bytes")
    flow.settings.approvals_required_over_mb = small["bytes"] / 1024 / 1024 + 0.01
    proposals = flow.propose(ENGINEER)
    assert proposals[PENDING]["approvals_required"] == 1  # decision_log: under the size
    big = [p for p in proposals.values() if p["table_bytes"] > small["bytes"] + 0.01 * 2**20]
    assert big and all(p["approvals_required"] == 2 for p in big)
    assert flow.click(APPROVE, proposals[PENDING]["id"], MANAGER).startswith("Approved")


def test_a_slack_error_on_the_message_does_not_leave_the_proposal_applying(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    pid, ts = proposals[PENDING]["id"], proposals[PENDING]["message_ts"]
    flow.slack.fail("chat.update", status=502)  # the "applying…" update is lost
    assert flow.click(APPROVE, pid, MANAGER).startswith("Approved index migration")
    assert flow.slack.attempts("chat.update")[0].status == 502
    assert flow.proposal(pid)["status"] == "applied"
    assert "Applied" in context(flow.updates(ts)[-1]["blocks"])


def test_reject_asks_for_a_reason_in_a_modal(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    pid, ts = proposals[PENDING]["id"], proposals[PENDING]["message_ts"]
    requests = flow.bot.requests
    assert requests is not None

    # a non-manager gets no modal
    assert flow.click(REJECT, pid, ENGINEER).startswith("Only managers may approve or reject")
    assert flow.slack.answered("views.open") == []

    reply = requests.click(REJECT, str(pid), user=MANAGER)
    assert reply.status == 200
    [opened] = flow.slack.wait_for("views.open")
    assert opened.params["trigger_id"] == f"trigger-{reply.response_key}"
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["type"] == "modal" and view["callback_id"] == "hotdata_reject_reason"
    assert view["private_metadata"] == str(pid)
    [field] = view["blocks"]
    assert field["block_id"] == "reason" and field["element"]["action_id"] == "reason"

    def submit(reason: str, user: str = MANAGER) -> Any:
        values = {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
        return requests.submit_view("hotdata_reject_reason", values, str(pid), user=user)

    too_short = submit(" no ")
    assert too_short.status == 200
    assert too_short.json()["response_action"] == "errors"
    assert "reason" in too_short.json()["errors"]
    assert flow.proposal(pid)["status"] == "pending"

    # a forged submission by a non-manager is refused by the service as well
    submit("I do not like it", user=ENGINEER)
    [told] = flow.slack.wait_for("chat.postEphemeral")
    assert told.params["user"] == ENGINEER and "Only managers" in told.params["text"]
    assert flow.proposal(pid)["status"] == "pending"

    reason = "Too big for the write path before the launch"
    accepted = submit(reason)
    assert accepted.status == 200 and not accepted.body
    [update] = flow.slack.wait_for("chat.update", timeout=30)
    assert update.params["ts"] == ts
    assert not has_buttons(update.params["blocks"])
    assert f"Rejected by <@{MANAGER}>: {reason}" in context(update.params["blocks"])
    final = flow.proposal(pid)
    assert (final["status"], final["reason"], final["decided_by"]) == ("rejected", reason,
                                                                      MANAGER)
    assert flow.audit(pid) == ["proposed", "refused", "refused", "rejected"]
    assert PENDING not in flow.indexes("public.decision_log")
    # a later approval finds it decided
    assert flow.click(APPROVE, pid, BOSS) == (f"Index migration #{pid} was already rejected "
                                              f"by <@{MANAGER}>.")


def test_a_partitioned_tables_index_is_built_online_through_the_approval(flow: Flow,
                                                                          tmp_path: Path) -> None:
    """PostgreSQL refuses CREATE INDEX CONCURRENTLY on a partitioned table: the approved index
    is built in steps (ON ONLY, each partition CONCURRENTLY, ATTACH) and ends valid on the
    table and every partition, sub-partitions included."""
    for url in flow.databases:  # the advisor's scratch copy, if any, holds the table too
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE events (id int, blog_id int, at date) "
                         "PARTITION BY RANGE (at)")
            conn.execute("CREATE TABLE events_jan PARTITION OF events "
                         "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')")
            conn.execute("CREATE TABLE events_feb PARTITION OF events FOR VALUES "
                         "FROM ('2026-02-01') TO ('2026-03-01') PARTITION BY HASH (id)")
            for n in range(2):
                conn.execute(f"CREATE TABLE events_feb_{n} PARTITION OF events_feb "
                             f"FOR VALUES WITH (MODULUS 2, REMAINDER {n})")
            conn.execute("INSERT INTO events SELECT g, g % 2000, date '2026-01-01' + (g % 50) "
                         "FROM generate_series(1, 60000) g")
            conn.execute("ANALYZE events")
    watched = watched_file(tmp_path, [{"name": "blog events", "calls": 300,
                                       "sql": "SELECT * FROM events WHERE blog_id = 42"}])
    settings = flow.settings.model_copy(update={"watched_queries": watched})
    analysis = flow.bot.run(analyze(settings, top=3))
    [rec] = [r for r in analysis.recommendations if r["table"] == "public.events"]
    assert rec["sql"].startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS")
    flow.bot.run(record(settings, analysis, ENGINEER))
    proposal = flow.propose(ENGINEER)[rec["index"]]
    answer = flow.click(APPROVE, proposal["id"], MANAGER)
    assert answer == f"Approved index migration #{proposal['id']}; the result is in the channel."
    final = flow.proposal(proposal["id"])
    assert final["status"] == "applied", final["result"]
    steps = final["result"]["steps"]
    assert steps[0].startswith(f"CREATE INDEX IF NOT EXISTS {rec['index']} ON ONLY public.events")
    assert sum("ATTACH PARTITION" in s for s in steps) == 4  # jan, feb, feb_0, feb_1
    valid = flow.query(
        "SELECT c.relname AS tbl, i.indisvalid AS valid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname LIKE 'events%%'")
    assert {r["tbl"] for r in valid} == {"events", "events_jan", "events_feb", "events_feb_0",
                                         "events_feb_1"}
    assert all(r["valid"] for r in valid)
    [applied] = flow.query("SELECT detail FROM hotdata.audit_log WHERE proposal_id = %s "
                           "AND action = 'applied'", (proposal["id"],))
    assert applied["detail"]["steps"] == steps


# --- preflight, expiry, tampering -------------------------------------------------------------

def test_an_existing_index_or_a_changed_table_is_reported_not_built(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    unread = proposals[UNREAD]
    flow.execute(f"CREATE INDEX {UNREAD} ON public.notifications (user_id, created_at DESC) "
                 "WHERE NOT read")
    before = flow.indexes("public.notifications")
    flow.click(APPROVE, unread["id"], MANAGER)
    final = flow.proposal(unread["id"])
    assert final["status"] == "unneeded"
    note = f"index {UNREAD} already exists on public.notifications: nothing built"
    assert final["result"] == {"note": note}
    assert flow.indexes("public.notifications") == before  # nothing built twice
    last = flow.updates(unread["message_ts"])[-1]
    assert not has_buttons(last["blocks"])
    assert f"Nothing built (approved by <@{MANAGER}>): {note}" in context(last["blocks"])
    assert flow.replies(unread["message_ts"]) == [f":information_source: Nothing built: {note}"]
    assert flow.audit(unread["id"]) == ["proposed", "approved", "unneeded"]

    pending = proposals[PENDING]
    flow.execute("ALTER TABLE public.decision_log DROP COLUMN created_at CASCADE")
    flow.click(APPROVE, pending["id"], MANAGER)
    final = flow.proposal(pending["id"])
    assert final["status"] == "failed"
    assert final["result"]["error"] == ("table public.decision_log changed: column(s) "
                                        "created_at no longer exist")
    assert PENDING not in flow.indexes("public.decision_log")
    assert "changed" in context(flow.updates(pending["message_ts"])[-1]["blocks"])


def test_an_equivalent_index_built_meanwhile_means_nothing_is_built(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    unread = proposals[UNREAD]
    # another name, the same keys and rows, one more column held: it serves the proposed index
    flow.execute("CREATE INDEX someone_elses ON public.notifications (user_id, created_at DESC)"
                 " INCLUDE (kind) WHERE NOT read")
    before = flow.indexes("public.notifications")
    flow.click(APPROVE, unread["id"], MANAGER)
    final = flow.proposal(unread["id"])
    assert final["status"] == "unneeded"
    assert final["result"]["note"] == (f"the existing index someone_elses already serves what "
                                       f"{UNREAD} would: nothing built")
    assert flow.indexes("public.notifications") == before
    assert flow.audit(unread["id"]) == ["proposed", "approved", "unneeded"]


def test_a_table_grown_past_the_limit_is_approved_again(flow: Flow) -> None:
    flow.settings.apply_growth_limit = 1.5
    proposals = flow.propose(ENGINEER)
    pending = proposals[PENDING]
    shown = pending["table_bytes"]
    [size] = flow.query("SELECT pg_total_relation_size('public.decision_log') AS bytes")
    assert shown == size["bytes"] > 0  # the size the card shows
    [posted] = [c.params for c in flow.slack.answered("chat.postMessage") if c.params[
        "text"].startswith(f"Index migration #{pending['id']} (pending): ")]
    assert f"*Table:* {units.size_text(shown)} when proposed" in json.dumps(posted["blocks"])
    [columns] = flow.query("SELECT string_agg(quote_ident(attname), ', ') AS names "
                           "FROM pg_attribute WHERE attrelid = 'public.decision_log'::regclass "
                           "AND attnum > 1 AND NOT attisdropped")
    flow.execute(f"INSERT INTO public.decision_log ({columns['names']}) "
                 f"SELECT {columns['names']} FROM public.decision_log")  # doubled
    flow.click(APPROVE, pending["id"], MANAGER)
    final = flow.proposal(pending["id"])
    assert final["status"] == "pending" and final["decided_by"] is None
    assert final["table_bytes"] > shown * 1.5  # the card shows the table as it is now
    reason = final["result"]["asked_again"]
    assert reason.startswith(f"public.decision_log grew from {units.size_text(shown)} to ")
    assert "HOTDATA_APPLY_GROWTH_LIMIT" in reason
    assert PENDING not in flow.indexes("public.decision_log")
    redrawn = flow.updates(pending["message_ts"])[-1]
    assert has_buttons(redrawn["blocks"]) and reason in json.dumps(redrawn["blocks"])
    assert flow.replies(pending["message_ts"]) == [f":warning: Not built yet: {reason}"]
    assert flow.audit(pending["id"]) == ["proposed", "approved", "ask again"]
    # approved again, for the table as it is: built
    assert flow.click(APPROVE, pending["id"], BOSS).startswith("Approved index migration")
    assert flow.proposal(pending["id"])["status"] == "applied"
    assert flow.indexes("public.decision_log")[PENDING] is True


def test_a_long_transaction_on_the_table_is_named_instead_of_waited_for(flow: Flow) -> None:
    flow.settings.lock_timeout_ms = 200
    proposals = flow.propose(ENGINEER)
    pending = proposals[PENDING]
    with psycopg.connect(flow.url, application_name="nightly-export") as holder:
        holder.execute("UPDATE public.decision_log SET status = status WHERE false")
        [me] = holder.execute("SELECT pg_backend_pid()").fetchone() or [0]
        deadline = time.monotonic() + 30
        while not flow.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND "
                             "xact_start < now() - interval '0.3 s'", (me,)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        flow.click(APPROVE, pending["id"], MANAGER)
        final = flow.proposal(pending["id"])
        holder.rollback()
    assert final["status"] == "pending"
    reason = final["result"]["asked_again"]
    assert re.fullmatch(
        rf"a transaction open for [\d.]+ s \(pid {me}, application 'nightly-export'\) would "
        r"make CREATE INDEX CONCURRENTLY wait for it longer than the lock timeout \(200 ms\): "
        r"approve again once it has ended", reason), reason
    assert "UPDATE" not in reason  # its age and application, never its text
    assert PENDING not in flow.indexes("public.decision_log")
    assert flow.replies(pending["message_ts"]) == [f":warning: Not built yet: {reason}"]


def test_expired_proposals_cannot_be_approved_and_proposals_are_listed(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    old = proposals[PENDING]
    flow.execute("UPDATE hotdata.proposals SET created_at = now() - interval '73 hours' "
                 "WHERE id = %s", (old["id"],))
    assert flow.click(APPROVE, old["id"], MANAGER) == (f"Index migration #{old['id']} was "
                                                       "already expired.")
    assert flow.proposal(old["id"])["status"] == "expired"
    assert flow.audit(old["id"]) == ["proposed", "expired"]
    assert PENDING not in flow.indexes("public.decision_log")
    # its message shows it expired, without buttons
    expired = [c.params for c in flow.slack.answered("chat.update")
               if f"#{old['id']} (expired)" in c.params.get("text", "")]
    assert expired
    assert all(b["type"] != "actions" for b in expired[-1]["blocks"])

    reply = flow.bot.slash("proposals", user=ENGINEER)
    assert reply.status == 200
    [answer] = flow.slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
    lines = answer.params["text"].splitlines()
    assert lines[0] == "*Index migrations* (pending first)"
    still = sorted((r for r in proposals.values() if r["id"] != old["id"]),
                   key=lambda r: -r["id"])
    expected = [f"• #{r['id']} `{r['index_name']}` on `{r['table_name']}` — *pending*"
                for r in still]
    expected.append(f"• #{old['id']} `{PENDING}` on `public.decision_log` — *expired*")
    assert [line.split(" · ")[0] for line in lines[1:]] == expected


def test_an_applied_index_can_be_rolled_back_through_the_same_approval(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    pending = proposals[PENDING]
    answer = flow.click(ROLLBACK, pending["id"], ENGINEER)
    assert answer == (f"Only an applied index migration can be rolled back: #{pending['id']} "
                      "is pending.")
    assert flow.click(APPROVE, pending["id"], MANAGER).startswith("Approved")
    assert flow.indexes("public.decision_log")[PENDING] is True
    applied = flow.updates(pending["message_ts"])[-1]
    [undo] = [b for b in applied["blocks"] if b.get("block_id") == "undo"]
    assert [(e["action_id"], e["value"]) for e in undo["elements"]] == [
        (ROLLBACK, str(pending["id"]))]

    # anyone may propose the rollback; it is a proposal like any other
    answer = flow.click(ROLLBACK, pending["id"], ENGINEER)
    [rollback] = flow.query("SELECT * FROM hotdata.proposals WHERE id > %s "
                            "AND sql LIKE 'DROP INDEX%%'", (max(p["id"] for p in
                                                                proposals.values()),))
    assert answer == (f"Proposed the rollback of index migration #{pending['id']} as "
                      f"#{rollback['id']} in <#C0HOTDATA> for a manager's approval.")
    assert rollback["sql"] == f"DROP INDEX CONCURRENTLY IF EXISTS public.{PENDING};"
    assert rollback["status"] == "pending" and rollback["evidence"]["rollback_of"] == \
        pending["id"]
    assert flow.click(ROLLBACK, pending["id"], ENGINEER) == (
        f"The rollback of index migration #{pending['id']} is already proposed.")
    [card] = [c.params for c in flow.slack.answered("chat.postMessage")
              if c.params["text"].startswith(f"Index migration #{rollback['id']} (pending)")]
    assert card["blocks"][0]["text"]["text"] == (f"Index rollback #{rollback['id']}: "
                                                 "public.decision_log")
    assert has_buttons(card["blocks"])
    # the same approval: not the proposer, a manager; then the index is gone
    assert flow.click(APPROVE, rollback["id"], LEAD).startswith("Only managers")
    assert flow.click(APPROVE, rollback["id"], BOSS).startswith("Approved")
    assert flow.proposal(rollback["id"])["status"] == "applied"
    assert PENDING not in flow.indexes("public.decision_log")
    [told] = flow.replies(rollback["message_ts"])
    assert told.startswith(f":white_check_mark: `{PENDING}` is dropped (rollback of index "
                           f"migration #{pending['id']})")
    assert flow.audit(rollback["id"]) == ["proposed", "refused", "approved", "applied"]
    # a rollback is not rolled back
    assert flow.click(ROLLBACK, rollback["id"], ENGINEER) == (
        f"Only an applied index migration can be rolled back: #{rollback['id']} is applied "
        "(a rollback itself).")


def home_views(flow: Flow, count: int) -> dict[str, dict[str, Any]]:
    """The last `count` published Home views, by user; each one valid Block Kit."""
    calls = flow.slack.wait_for("views.publish", count=count, timeout=60)[-count:]
    views = {}
    for call in calls:
        view = call.params["view"]
        view = json.loads(view) if isinstance(view, str) else view
        View(type=view["type"], blocks=view["blocks"]).validate_json()  # raises when invalid
        views[call.params["user_id"]] = view
    return views


def test_the_home_tab_shows_managers_the_buttons_and_follows_the_decisions(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    assert flow.bot.requests is not None
    for user in (MANAGER, ENGINEER):
        reply = flow.bot.requests.event({"type": "app_home_opened", "user": user, "tab": "home",
                                         "channel": "D0HOME", "event_ts": f"{time.time():.6f}"})
        assert reply.status == 200
    views = home_views(flow, 2)
    manager, member = views[MANAGER], views[ENGINEER]
    pending = proposals[PENDING]
    for view in (manager, member):
        text = json.dumps(view, ensure_ascii=False)
        assert view["type"] == "home" and "Latest analysis" in text
        assert f"*#{pending['id']}* `{PENDING}` on `public.decision_log` — pending" in text
        assert "Restore drills" in text and "*report*:" in text
    approve = [e for b in manager["blocks"] if b["type"] == "actions" for e in b["elements"]
               if e["action_id"] == APPROVE]
    assert binding.button_value(pending["id"], pending["sql_sha256"]) in [
        e["value"] for e in approve]
    assert not [b for b in member["blocks"] if b["type"] == "actions"]
    assert "Only managers may approve or reject" in json.dumps(member)

    # a decision changes what every Home that was opened shows
    published = len(flow.slack.answered("views.publish"))
    assert flow.click(APPROVE, pending["id"], MANAGER).startswith("Approved")
    flow.slack.wait_for("views.publish", count=published + 2, timeout=60)
    views = home_views(flow, 2)
    for view in views.values():
        assert f"*#{pending['id']}* `{PENDING}`" not in json.dumps(view, ensure_ascii=False)

    # a new analysis in a channel is on every Home, linked to its thread
    published = len(flow.slack.answered("views.publish"))
    assert flow.bot.slash("analyze top 2", user=ENGINEER).status == 200
    flow.slack.wait_for("views.publish", count=published + 2, timeout=120)
    [posted] = flow.query("SELECT channel, message_ts FROM hotdata.analyses "
                          "WHERE message_ts IS NOT NULL")
    link = (f"https://hotdata-test.slack.com/archives/{posted['channel']}/"
            f"p{posted['message_ts'].replace('.', '')}")
    for view in home_views(flow, 2).values():
        assert f"in <{link}|its thread>" in json.dumps(view, ensure_ascii=False)


def test_an_approval_outside_the_window_is_queued_and_applied_inside_it(flow: Flow) -> None:
    minute = (datetime.now(UTC) + timedelta(minutes=30)).replace(second=0, microsecond=0)
    flow.settings.apply_window = f"{minute.minute} {minute.hour} * * *"  # one minute, later
    proposals = flow.propose(ENGINEER)
    pending, unread = proposals[PENDING], proposals[UNREAD]
    pid = pending["id"]
    assert flow.click(APPROVE, pid, MANAGER) == (
        f"Approved index migration #{pid}; it is queued for {minute:%Y-%m-%d %H:%M} UTC, "
        "inside HOTDATA_APPLY_WINDOW.")
    queued = flow.proposal(pid)
    assert queued["status"] == "approved"
    assert datetime.fromisoformat(queued["result"]["queued_for"]) == minute
    assert PENDING not in flow.indexes("public.decision_log")
    card = flow.updates(pending["message_ts"])[-1]
    assert f"queued for {minute:%Y-%m-%d %H:%M} UTC (HOTDATA_APPLY_WINDOW)" in context(
        card["blocks"])
    [later] = [b for b in card["blocks"] if b.get("block_id") == "queued"]
    assert [(e["action_id"], e["value"]) for e in later["elements"]] == [(APPLY_NOW, str(pid))]
    assert not has_buttons(card["blocks"])  # decided: no Approve / Reject

    # the leader's clock (injected): nothing before the window, then exactly once inside it
    container = flow.bot.container
    assert flow.bot.run(approvals.apply_queued(container, minute - timedelta(minutes=1))) == []
    assert flow.bot.run(approvals.apply_queued(container, minute + timedelta(seconds=5))) == [pid]
    assert flow.bot.run(approvals.apply_queued(container, minute + timedelta(seconds=35))) == []
    assert flow.proposal(pid)["status"] == "applied"
    assert flow.indexes("public.decision_log")[PENDING] is True
    assert flow.audit(pid) == ["proposed", "approved", "queued", "applied"]

    # "Apply now": a manager builds a queued one at once, with a confirmation; nobody else
    assert "queued for" in flow.click(APPROVE, unread["id"], MANAGER)
    assert flow.click(APPLY_NOW, unread["id"], ENGINEER).startswith("Only managers")
    assert flow.click(APPLY_NOW, unread["id"], BOSS) == (
        f"Applying index migration #{unread['id']} now; the result is in the channel.")
    assert flow.proposal(unread["id"])["status"] == "applied"
    assert flow.audit(unread["id"]) == ["proposed", "approved", "queued", "refused",
                                        "applied now", "applied"]
    assert flow.click(APPLY_NOW, unread["id"], BOSS).startswith(
        f"Index migration #{unread['id']} was already approved")


def propose_wider(flow: Flow, older: Proposal, size_factor: float = 1.0
                  ) -> tuple[dict[str, Any], Proposal]:
    """An analysis recommending an index whose keys lead with `older`'s (`size_factor` times
    its size), proposed: the recommendation and the newer proposal."""
    rec = dict(older["evidence"])
    schema, table = rec["table"].split(".", 1)
    index = Candidate(schema, table, (*rec["columns"], "id"), rec["where"],
                      tuple(rec["include"]))
    wider = {**rec, "index": index.name, "columns": list(index.columns),
             "sql": index.create_sql(concurrently=True) + ";",
             "size_bytes": round(size_factor * (rec["size_bytes"] or 0))}
    [analysis] = flow.query(
        "INSERT INTO hotdata.analyses (requested_by, status, finished_at, report) "
        "VALUES (%s, 'done', now(), %s) RETURNING id",
        (ENGINEER, Jsonb({"recommendations": [wider]})))
    [newer] = flow.bot.run(service.propose(flow.bot.container, ENGINEER,
                                           analysis_id=analysis["id"]))
    return wider, newer


def test_a_newer_proposal_that_serves_an_older_one_supersedes_it(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    older = proposals[PENDING]
    wider, newer = propose_wider(flow, older)
    final = flow.proposal(older["id"])
    assert final["status"] == "superseded"
    assert final["result"]["superseded_by"] == newer["id"]
    card = flow.updates(older["message_ts"])[-1]
    assert not has_buttons(card["blocks"])
    assert (f"Not needed any more: superseded by index migration #{newer['id']} "
            f"({wider['index']})") in context(card["blocks"])
    assert flow.audit(older["id"]) == ["proposed", "superseded"]
    assert flow.click(APPROVE, older["id"], MANAGER) == (
        f"Index migration #{older['id']} was already superseded.")
    # the others, which it does not serve, stay pending
    assert flow.proposal(proposals[UNREAD]["id"])["status"] == "pending"


def test_a_newer_proposal_far_larger_than_an_older_one_it_serves_leaves_it(flow: Flow) -> None:
    """An older index at most half the newer one's size is kept beside it (a deduplicated
    key: a count reads far fewer pages of it), so it is not superseded."""
    older = flow.propose(ENGINEER)[PENDING]
    assert older["evidence"]["size_bytes"] > 0
    _, newer = propose_wider(flow, older, size_factor=3)
    assert newer["status"] == "pending"
    assert flow.proposal(older["id"])["status"] == "pending"
    assert flow.audit(older["id"]) == ["proposed"]


def test_an_expired_proposal_loses_its_buttons_without_anyone_clicking(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    old, fresh = proposals[PENDING], proposals[UNREAD]
    flow.execute("UPDATE hotdata.proposals SET created_at = now() - interval '73 hours' "
                 "WHERE id = %s", (old["id"],))
    flow.bot.run(Scheduler(flow.bot.container, "replica-test").heartbeat())  # every minute
    assert flow.proposal(old["id"])["status"] == "expired"
    card = flow.updates(old["message_ts"])[-1]
    assert not has_buttons(card["blocks"])
    assert "Expired without a decision" in context(card["blocks"])
    assert flow.audit(old["id"]) == ["proposed", "expired"]
    assert flow.proposal(fresh["id"])["status"] == "pending"  # the others keep theirs
    assert flow.updates(fresh["message_ts"]) == []
    # a click on the old card is told what happened
    assert flow.click(APPROVE, old["id"], MANAGER) == (f"Index migration #{old['id']} was "
                                                       "already expired.")


def test_a_tampered_proposal_is_refused_at_apply_time(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    rows_before = flow.query("SELECT count(*) AS n FROM public.decision_log")

    # statement and evidence both replaced by a DROP TABLE after the card was posted: the
    # statement to run is not the one approved, and the channel is told
    pending = proposals[PENDING]
    flow.execute("UPDATE hotdata.proposals SET sql = 'DROP TABLE public.decision_log', "
                 "evidence = jsonb_set(evidence, '{sql}', '\"DROP TABLE public.decision_log\"')"
                 " WHERE id = %s", (pending["id"],))
    flow.click(APPROVE, pending["id"], MANAGER)
    final = flow.proposal(pending["id"])
    assert final["status"] == "failed"
    approved = pending["sql_sha256"][:12]
    assert final["result"]["error"] == (
        "refused: the statement to run (sha256 "
        f"{binding.digest('DROP TABLE public.decision_log')[:12]}) is not the one approved "
        f"(sha256 {approved}): the proposal was edited after it was posted")
    assert flow.query("SELECT count(*) AS n FROM public.decision_log") == rows_before
    assert flow.audit(pending["id"]) == ["proposed", "approved", "failed"]
    [told] = flow.replies(pending["message_ts"])
    assert told.startswith(":x: Not applied: refused: the statement to run")

    # the digest edited too: the card the manager saw shows another statement, so the click
    # approves nothing, and the card is redrawn with what the proposal now holds
    flow.execute("CREATE INDEX keep_me ON public.notifications (kind)")
    unread = proposals[UNREAD]
    drop_sql = "DROP INDEX CONCURRENTLY IF EXISTS public.keep_me"
    flow.execute("UPDATE hotdata.proposals SET sql = %s, sql_sha256 = %s, "
                 "evidence = evidence || %s WHERE id = %s",
                 (drop_sql, binding.digest(drop_sql), Jsonb({"sql": drop_sql}), unread["id"]))
    shown = binding.button_value(unread["id"], unread["sql_sha256"])
    answer = flow.click(APPROVE, unread["id"], MANAGER, value=shown)
    current = binding.digest(drop_sql)[:12]
    assert answer == (f"Nothing approved: this card showed statement sha256 "
                      f"`{unread['sql_sha256'][:12]}`, but index migration #{unread['id']} now "
                      f"holds sha256 `{current}`. The card shows the current statement again: "
                      "read it, then approve there.")
    assert flow.proposal(unread["id"])["status"] == "pending"
    assert flow.audit(unread["id"]) == ["proposed", "refused"]
    redrawn = flow.updates(unread["message_ts"])[-1]
    assert drop_sql in json.dumps(redrawn["blocks"])
    assert f"statement sha256 `{current}`" in context(redrawn["blocks"])
    # approved from the redrawn card, the allow-list still refuses what is not the index
    flow.click(APPROVE, unread["id"], MANAGER)
    final = flow.proposal(unread["id"])
    assert final["status"] == "failed"
    assert final["result"]["error"] == (f"refused: the statement does not create the proposed "
                                        f"index {UNREAD} on public.notifications")
    assert flow.indexes("public.notifications")["keep_me"] is True

    # a card from before statement digests (its Approve carries none) approves nothing either
    other = next(r for name, r in proposals.items() if name not in (UNREAD, PENDING))
    answer = flow.click(APPROVE, other["id"], MANAGER, value=str(other["id"]))
    assert answer.startswith("Nothing approved: this card showed no statement digest")
    assert flow.proposal(other["id"])["status"] == "pending"


def test_lock_timeout_fails_cleanly(flow: Flow) -> None:
    flow.settings.lock_timeout_ms = 200
    flow.settings.apply_retries = 1
    flow.settings.statement_timeout_ms = 300  # the "before" measurement waits on the lock too
    proposals = flow.propose(ENGINEER)
    pending = proposals[PENDING]
    # a session holding the table: the check before the build names it (it waited for the lock
    # as long as the lock timeout, so the transaction is older than that) and builds nothing
    with psycopg.connect(flow.url, application_name="maintenance") as holder:
        holder.execute("LOCK TABLE public.decision_log IN ACCESS EXCLUSIVE MODE")
        flow.click(APPROVE, pending["id"], MANAGER)
        holder.rollback()
    final = flow.proposal(pending["id"])
    assert final["status"] == "pending"
    assert "application 'maintenance'" in final["result"]["asked_again"]
    assert flow.invalid_indexes() == []
    assert PENDING not in flow.indexes("public.decision_log")

    # a lock taken after that check, during the build: it times out, and nothing is left
    rec = dict(pending["evidence"])
    with psycopg.connect(flow.url) as holder:
        holder.execute("LOCK TABLE public.decision_log IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(applying.ApplyFailed) as failed:
            flow.bot.run(applying.apply(flow.settings, rec))  # type: ignore[arg-type]
        holder.rollback()
    assert str(failed.value) == ("could not take the lock on public.decision_log within "
                                 "200 ms in 2 attempt(s); no invalid index was left behind")
    assert flow.invalid_indexes() == []
    assert PENDING not in flow.indexes("public.decision_log")

    # an open transaction that wrote to the table: the build times out after it created its
    # (invalid) index, which cannot be dropped while that transaction lasts; that is said
    unread = dict(proposals[UNREAD]["evidence"])
    with psycopg.connect(flow.url) as writer:
        writer.execute("UPDATE public.notifications SET read = read "
                       "WHERE id = (SELECT min(id) FROM public.notifications)")
        with pytest.raises(applying.ApplyFailed) as failed:
            flow.bot.run(applying.apply(flow.settings, unread))  # type: ignore[arg-type]
        writer.rollback()
    error = str(failed.value)
    assert error.startswith("could not take the lock on public.notifications within 200 ms "
                            "in 1 attempt(s); the invalid index")
    assert error.endswith(f"DROP INDEX CONCURRENTLY IF EXISTS public.{UNREAD}")
    assert flow.invalid_indexes() == [UNREAD]
    flow.execute(f"DROP INDEX CONCURRENTLY IF EXISTS public.{UNREAD}")  # the advice works
    assert flow.invalid_indexes() == []


# --- migration files, squawk, the CLI ---------------------------------------------------------

PRISMA_SCHEMA = """\
model Notification {
  id        BigInt   @id
  userId    String   @map("user_id") @db.Uuid
  createdAt DateTime @map("created_at")
  read      Boolean
  kind      String
  @@map("notifications")
}

model DecisionLog {
  id        BigInt   @id
  userId    String   @map("user_id") @db.Uuid
  status    String
  createdAt DateTime @map("created_at")
  @@map("decision_log")
}
"""


def test_migration_files_supabase_and_prisma_with_squawk(flow: Flow, tmp_path: Path) -> None:
    container = flow.bot.container
    started = datetime.now(UTC).replace(microsecond=0)
    created = flow.bot.run(service.propose(container, ENGINEER, out=tmp_path / "supabase",
                                           post=False))
    assert flow.slack.answered("chat.postMessage") == []
    assert {p["index_name"] for p in created} >= {UNREAD, PENDING}
    for proposal in created:
        rec, path = proposal["evidence"], Path(proposal["file"])
        assert path.parent == tmp_path / "supabase"
        match = re.fullmatch(r"(\d{14})_hotdata_(\w+)\.sql", path.name)
        assert match and match[2] == rec["index"]
        stamp = datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        assert started <= stamp <= datetime.now(UTC)
        lines = path.read_text().splitlines()
        assert lines[0] == (f"-- hotdata proposal #{proposal['id']}: {rec['index']} on "
                            f"{rec['table']}")
        assert f"-- Serves: {', '.join(rec['queries'])}" in lines
        assert any(line.startswith("-- Run this file OUTSIDE a transaction") for line in lines)
        assert lines[-3:] == ["SET lock_timeout = '5000ms';", "SET statement_timeout = 0;",
                              rec["sql"]]
        assert rec["sql"].startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS ")
        assert rec["lint"] == []  # squawk's findings on the file, stored with the evidence

    # squawk does find what is wrong with a careless migration
    findings = flow.bot.run(squawk.lint("CREATE INDEX i ON public.notifications (kind);\n"))
    assert {"require-concurrent-index-creation", "require-lock-timeout"} <= {
        f["rule"] for f in findings}
    assert all(f["message"] for f in findings)

    # the file runs as written, statement by statement outside a transaction
    [pending] = [p for p in created if p["index_name"] == PENDING]
    with psycopg.connect(flow.url, autocommit=True) as conn:
        for line in Path(pending["file"]).read_text().splitlines():
            if line and not line.startswith("--"):
                conn.execute(line)
    assert flow.indexes("public.decision_log")[PENDING] is True

    # past their time to live the proposals may be proposed again; Prisma's layout
    flow.execute("UPDATE hotdata.proposals SET created_at = now() - interval '73 hours'")
    flow.settings.migration_layout = "prisma"
    schema = tmp_path / "schema.prisma"
    schema.write_text(PRISMA_SCHEMA)
    flow.settings.prisma_schema = schema
    again = flow.bot.run(service.propose(container, ENGINEER, out=tmp_path / "prisma",
                                         post=False))
    # each proposal carries its model's @@index line (or says why there is none), and the
    # patch adds them to schema.prisma
    by_name = {p["index_name"]: p["evidence"]["prisma"] for p in again}
    unread = by_name[UNREAD]
    assert unread["model"] == "Notification"
    assert unread["line"] == f'@@index([userId, createdAt(sort: Desc)], map: "{UNREAD}")'
    assert unread["note"] is not None and "WHERE NOT read" in unread["note"]
    assert by_name[PENDING]["model"] == "DecisionLog"
    for proposal in again:  # the tables the schema has no model for get a reason instead
        found = proposal["evidence"]["prisma"]
        if proposal["table_name"] in ("public.notifications", "public.decision_log"):
            assert found["line"] and found["model"] in ("Notification", "DecisionLog")
        else:
            assert found["line"] is None and "no model for" in (found["note"] or "")
    [patch] = {p["prisma_patch"] for p in again}
    assert Path(patch) == tmp_path / "prisma" / "schema.prisma.patch"
    subprocess.run(["git", "apply", patch], cwd=tmp_path, check=True)
    assert unread["line"] in schema.read_text() and by_name[PENDING]["line"] in \
        schema.read_text()
    assert sorted(p["index_name"] for p in again) == sorted(p["index_name"] for p in created)
    assert {flow.proposal(p["id"])["status"] for p in created} == {"expired"}
    for proposal in again:
        path = Path(proposal["file"])
        assert path.name == "migration.sql"
        assert path.parent.parent == tmp_path / "prisma" / "prisma" / "migrations"
        assert re.fullmatch(rf"\d{{14}}_hotdata_{proposal['index_name']}", path.parent.name)
        assert path.read_text().splitlines()[-1] == proposal["sql"]


def test_cli_propose_prints_and_writes_the_migrations(hotdash: str, tmp_path: Path) -> None:
    run_workload(hotdash)
    out = tmp_path / "migrations"
    hotdata = Path(sys.executable).parent / "hotdata"
    done = subprocess.run(
        [str(hotdata), "propose", "--dsn", hotdash, "--out", str(out)], cwd=tmp_path,
        env=clean_env(HOTDATA_WATCHED_QUERIES=str(tiles_file(tmp_path)), **advised_env(hotdash)),
        capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(hotdash, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM hotdata.proposals ORDER BY id").fetchall()
    assert {r["index_name"] for r in rows} >= {UNREAD, PENDING}
    files = sorted(out.glob("*_hotdata_*.sql"))
    assert len(files) == len(rows)
    for row in rows:
        assert row["status"] == "pending" and row["proposed_by"] == "cli"
        assert f"#{row['id']} {row['sql']}" in done.stdout
        [path] = out.glob(f"*_hotdata_{row['index_name']}.sql")
        assert f"written to {path}" in done.stdout
        assert path.read_text().splitlines()[-1] == row["sql"]
    assert "not posted to Slack" in done.stdout


def test_decisions_from_the_command_line_update_the_cards(flow: Flow) -> None:
    proposals = flow.propose(ENGINEER)
    first, second = proposals[PENDING], proposals[UNREAD]
    hotdata = Path(sys.executable).parent / "hotdata"
    env = clean_env(HOTDATA_DATABASE_URL=flow.url, SLACK_BOT_TOKEN=BOT_TOKEN,
                    HOTDATA_SLACK_API_URL=flow.settings.slack_api_url,
                    HOTDATA_CHANNEL="C0HOTDATA", HOTDATA_MANAGER_IDS=f"{MANAGER},{BOSS}",
                    **({"HOTDATA_SCRATCH_DATABASE_URL": flow.settings.scratch_database_url}
                       if flow.settings.scratch_database_url else {}))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(hotdata), *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    listed = cli("proposals")
    assert listed.returncode == 0, listed.stderr
    assert (f"#{first['id']} pending    sha256 {first['sql_sha256'][:12]} {PENDING} on "
            "public.decision_log") in listed.stdout
    # the same checks as a click: not a manager, or another statement's digest, decides nothing
    refused = cli("approve", str(first["id"]), first["sql_sha256"][:12], "--as", ENGINEER)
    assert refused.returncode == 1 and "Only managers may approve" in refused.stdout
    stale = cli("approve", str(first["id"]), "0" * 12, "--as", MANAGER)
    assert stale.returncode == 1 and "Nothing approved" in stale.stdout
    assert flow.proposal(first["id"])["status"] == "pending"

    done = cli("approve", str(first["id"]), first["sql_sha256"][:12].upper(), "--as", MANAGER)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"#{first['id']} is now applied" in done.stdout
    assert flow.indexes("public.decision_log")[PENDING] is True
    last = flow.updates(first["message_ts"])[-1]
    assert f"Applied (approved by <@{MANAGER}>)" in context(last["blocks"])
    assert not has_buttons(last["blocks"])
    # each command is audited with the account that ran it (the stale one and this one)
    ran = flow.query("SELECT detail FROM hotdata.audit_log WHERE proposal_id = %s "
                     "AND action = 'command line' AND actor = %s", (first["id"], MANAGER))
    assert len(ran) == 2 and all(r["detail"]["account"] for r in ran)
    assert flow.audit(first["id"])[-2:] == ["approved", "applied"]

    rejected = cli("reject", str(second["id"]), "--as", BOSS, "--reason", "not this week")
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert f"#{second['id']} is now rejected" in rejected.stdout
    last = flow.updates(second["message_ts"])[-1]
    assert f"Rejected by <@{BOSS}>: not this week" in context(last["blocks"])
    assert not has_buttons(last["blocks"])
    # a decided proposal cannot be decided again, from anywhere
    again = cli("approve", str(second["id"]), second["sql_sha256"][:12], "--as", MANAGER)
    assert again.returncode == 1 and "already rejected" in again.stdout


# --- a real crash in the middle of the build --------------------------------------------------

BIG_ROWS = 2_000_000
BIG_INDEX = "idx_big_events_token"


def test_a_killed_apply_is_reconciled_and_leaves_no_invalid_index(flow: Flow) -> None:
    flow.execute(f"CREATE TABLE public.big_events AS SELECT i AS id, md5(i::text) AS token "
                 f"FROM generate_series(1, {BIG_ROWS}) i")
    flow.execute("ALTER TABLE public.big_events SET (parallel_workers = 0)")
    [db] = flow.query("SELECT current_database() AS name")
    flow.execute(f"ALTER DATABASE \"{db['name']}\" SET maintenance_work_mem = '1MB'")  # slower
    sql = (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {BIG_INDEX} ON public.big_events "
           "(token);")
    rec = {"action": "create", "table": "public.big_events", "index": BIG_INDEX,
           "columns": ["token"], "where": None, "include": [], "sql": sql,
           "queries": ["events_by_token"], "cost_before": 41000.0, "cost_after": 8.4,
           "measured_before_ms": None, "measured_after_ms": None, "size_bytes": 120_000_000,
           "size_estimated": True, "benefit_ms": 100.0, "write_penalty_ms": 0.0,
           "costed_as": ["owner"], "statements": []}
    [analysis] = flow.query(
        "INSERT INTO hotdata.analyses (requested_by, status, finished_at, report) "
        "VALUES (%s, 'done', now(), %s) RETURNING id",
        (ENGINEER, Jsonb({"recommendations": [rec]})))
    [proposal] = flow.bot.run(service.propose(flow.bot.container, ENGINEER,
                                              analysis_id=analysis["id"]))
    pid, ts = proposal["id"], proposal["message_ts"]

    child = subprocess.Popen(
        [sys.executable, "-m", "tests.apply_child", flow.url, flow.settings.slack_api_url,
         str(pid), MANAGER, binding.short(proposal["sql_sha256"])], cwd=ROOT, env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not flow.query(CIC_RUNNING_SQL):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never started building"
            time.sleep(0.02)
        time.sleep(0.2)  # well into the build
        # a replica starting now leaves a proposal that a live process is applying alone
        assert flow.bot.run(approvals.reconcile(flow.bot.container)) == []
        assert flow.proposal(pid)["status"] == "applying" and flow.query(CIC_RUNNING_SQL)
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert flow.proposal(pid)["status"] == "applying"  # killed half-way

    # the orphaned backend notices its client is gone (client_connection_check_interval)
    deadline = time.monotonic() + 15
    while flow.query(CIC_RUNNING_SQL):
        assert time.monotonic() < deadline, "the orphaned build is still running"
        time.sleep(0.05)
    updates_before = len(flow.updates(ts))

    settled = flow.bot.run(approvals.reconcile(flow.bot.container))  # as `hotdata serve` starts
    assert [s["id"] for s in settled] == [pid]
    final = flow.proposal(pid)
    assert final["result"]["reconciled"] is True
    indexes = flow.indexes("public.big_events")
    if final["status"] == "applied":  # the build had finished when the process died
        assert indexes == {BIG_INDEX: True}
    else:
        assert final["status"] == "failed"
        assert indexes == {}
        # killed before or after the build's first transaction made its catalog entry
        assert ("the invalid index it left was dropped" in final["result"]["error"]
                or "no invalid index was left behind" in final["result"]["error"])
    assert flow.invalid_indexes() == []
    assert flow.audit(pid) == ["proposed", "approved", "reconciled"]
    [audit_row] = flow.query("SELECT actor, outcome FROM hotdata.audit_log "
                             "WHERE proposal_id = %s AND action = 'reconciled'", (pid,))
    assert audit_row == {"actor": "hotdata", "outcome": final["status"]}
    updates = flow.updates(ts)
    assert len(updates) == updates_before + 1
    assert not has_buttons(updates[-1]["blocks"])
    assert updates[-1]["text"].startswith(f"Index migration #{pid} ({final['status']})")
    assert flow.replies(ts)[-1].startswith(f"After a restart, index migration #{pid} is "
                                           f"{final['status']}")
    # settled once: a second start finds nothing left to do
    assert flow.bot.run(approvals.reconcile(flow.bot.container)) == []
    assert timedelta(0) < final["updated_at"] - final["created_at"]
