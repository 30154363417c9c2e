"""With hotdata's state database (and the scratch server) stopped, every command, button and
modal is still answered: HTTP 200 at once, then a message that says what failed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot import pgcluster
from bot.fake_slack import FakeSlack
from bot.render.proposals import APPROVE, PROPOSE, REJECT
from bot.settings import Settings
from tests.harness import BotUnderTest

STATE_DOWN = "cannot connect to the state database"


@pytest.fixture
def stopped(settings: Settings, slack: FakeSlack) -> Iterator[BotUnderTest]:
    """The bot, its state on a server of its own that is stopped once the bot has started."""
    state = pgcluster.create()
    try:
        settings.state_database_url = state.url()
        settings.drill_database_url = state.url()  # the scratch server is gone too
        bot = BotUnderTest(settings, slack).start()
        state.stop()
        try:
            yield bot
        finally:
            bot.stop()
    finally:
        state.destroy()


def answer(bot: BotUnderTest, key: str) -> str:
    [said] = bot.slack.wait_for(f"response_url/{key}", timeout=60)
    return str(said.params.get("text", ""))


@pytest.mark.parametrize(("text", "says"), [
    ("analyze", f"hotdata could not finish `analyze`: {STATE_DOWN}"),
    ("propose", f"hotdata could not finish `propose`: {STATE_DOWN}"),
    ("proposals", f"hotdata could not finish `proposals`: {STATE_DOWN}"),
    ("report", f"hotdata could not finish `report`: {STATE_DOWN}"),
    ("drill", "hotdata could not finish `drill`: cannot connect to the migrator database"),
    ("status", "hotdata needs attention: state schema"),
])
def test_each_command_ends_in_a_message_saying_what_failed(stopped: BotUnderTest, text: str,
                                                           says: str) -> None:
    reply = stopped.slash(text, channel="C0OUTAGE")
    assert reply.status == 200
    assert answer(stopped, reply.response_key).startswith(says)


def test_a_drill_never_stays_preparing(stopped: BotUnderTest) -> None:
    reply = stopped.slash("drill", channel="C0OUTAGE")
    answer(stopped, reply.response_key)
    [posted] = stopped.slack.wait_for("chat.postMessage")
    [updated] = stopped.slack.wait_for("chat.update")
    assert posted.params["text"].endswith("started a restore drill: preparing…")
    assert updated.params["channel"] == posted.params["channel"] == "C0OUTAGE"
    assert updated.params["text"].startswith(":x: Restore drill failed: cannot connect")


@pytest.mark.parametrize("action", [APPROVE, REJECT, PROPOSE])
def test_each_button_ends_in_a_message_saying_what_failed(stopped: BotUnderTest,
                                                          action: str) -> None:
    assert stopped.requests is not None
    reply = stopped.requests.click(action, "1", user="U0MANAGER")
    assert reply.status == 200
    assert STATE_DOWN in answer(stopped, reply.response_key)
    assert not stopped.slack.answered("views.open")


@pytest.mark.parametrize(("callback", "block", "metadata"), [
    ("hotdata_reject_reason", "reason", "1"), ("hotdata_schema_review", "plan", "C0OUTAGE")])
def test_each_modal_ends_in_a_message_saying_what_failed(stopped: BotUnderTest, callback: str,
                                                         block: str, metadata: str) -> None:
    assert stopped.requests is not None
    submitted = stopped.requests.submit_view(
        callback, {block: {block: {"type": "plain_text_input",
                                   "value": "CREATE TABLE a (id int PRIMARY KEY);"}}},
        private_metadata=metadata, user="U0MANAGER")
    assert submitted.status == 200
    [told] = stopped.slack.wait_for("chat.postEphemeral", timeout=60)
    assert told.params["user"] == "U0MANAGER"
    assert STATE_DOWN in told.params["text"]
