"""Each Slack listener on its own, with a fake `ack` and no cluster: it reads the request,
acknowledges at once, and hands the work off without starting it (nothing touches a database
or the Web API before the ack). What the handed-off work does is tested end to end elsewhere."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.container import Container
from bot.errors import UserError
from bot.settings import Settings
from bot.tasks import OnError
from handlers import actions, commands, views

CHANNEL, USER = "C0LISTEN", "U0ENGINEER"


@dataclass
class Handed:
    name: str
    work: Coroutine[Any, Any, Any]
    on_error: OnError | None

    @property
    def flow(self) -> str:
        """The name of the coroutine function handed off (the innermost flow it awaits is
        not started: only its outer coroutine exists)."""
        return self.work.cr_code.co_name

    @property
    def arguments(self) -> dict[str, Any]:
        assert self.work.cr_frame is not None
        return dict(self.work.cr_frame.f_locals)


@dataclass
class Recorder:
    """Stands in for the task tracker: keeps what was handed off, runs nothing."""
    handed: list[Handed] = field(default_factory=list)

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str,
              on_error: OnError | None = None) -> None:
        assert inspect.getcoroutinestate(work) == inspect.CORO_CREATED
        self.handed.append(Handed(name, work, on_error))

    def close(self) -> None:
        for handed in self.handed:
            handed.work.close()


@dataclass
class Ack:
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    @property
    def text(self) -> str:
        [call] = self.calls
        return str(call.get("text", ""))


@dataclass
class Respond:
    said: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, **kwargs: Any) -> None:
        self.said.append(kwargs)


@pytest.fixture
def container() -> Any:
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        database_url="postgresql://nobody@127.0.0.1:1/none",
                        channel="C0HOTDATA", slack_bot_token="xoxb-listener-test-token")
    made = Container(settings, AsyncWebClient(token="xoxb-unused", base_url="http://127.0.0.1:1/"))
    recorder = Recorder()
    made.tasks = recorder  # type: ignore[assignment]
    yield made
    recorder.close()


def handed(container: Container) -> list[Handed]:
    return container.tasks.handed  # type: ignore[attr-defined, no-any-return]


def slash(container: Container, text: str) -> tuple[Ack, Respond]:
    ack, respond = Ack(), Respond()
    command = {"text": text, "channel_id": CHANNEL, "user_id": USER, "trigger_id": "T.1"}
    asyncio.run(commands.hotdata(ack=ack, command=command, respond=respond,
                                 context={"container": container}))
    return ack, respond


# --- /hotdata ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "says"), [
    ("", "*hotdata* — your PostgreSQL on call"),
    ("help", "`/hotdata analyze [top N]`"),
    ("anaylze top 5", "Unknown subcommand `anaylze`."),
    ("status please", "`/hotdata status` takes no arguments, got `please`."),
    ("help me", "`/hotdata help` takes no arguments, got `me`."),
    ("analyze top 0", "`top` must be between 1 and 50, got 0."),
    ("analyze top 51", "`top` must be between 1 and 50, got 51."),
    ("analyze top ²", "`/hotdata analyze` takes `top N`, got `top ²`."),
    ("analyze 5", "`/hotdata analyze` takes `top N`, got `5`."),
    ("schema public extra", "`/hotdata schema` takes one schema name, got `public extra`."),
])
def test_help_and_mistakes_are_answered_in_the_ack_alone(container: Container, text: str,
                                                         says: str) -> None:
    ack, respond = slash(container, text)
    assert says in ack.text
    assert ack.calls[0]["response_type"] == "ephemeral"
    assert handed(container) == [] and respond.said == []


@pytest.mark.parametrize(("text", "ack_text", "flow", "arguments"), [
    ("status", "Checking hotdata's status…", "status", {}),
    ("analyze", "Analysing the 5 slowest statements; results will appear here.",
     "run_in_channel", {"channel": CHANNEL, "user": USER, "top": 5}),
    ("ANALYZE top 12", "Analysing the 12 slowest statements; results will appear here.",
     "run_in_channel", {"top": 12}),
    ("lint", "Checking the schema…", "lint_schema", {}),
    ("schema", "Documenting schema public; the ERD will appear in this channel.", "_schema",
     {"name": "public"}),
    ("schema auth", "Documenting schema auth; the ERD will appear in this channel.", "_schema",
     {"name": "auth"}),
    ("propose", "Proposing the latest recommendations for approval…", "propose_for",
     {"user": USER}),
    ("proposals", "Looking up index migrations…", "list_for", {}),
    ("drill", "Starting a restore drill; progress and the result will appear here.",
     "run_in_channel", {"channel": CHANNEL, "user": USER}),
    ("report", "Building the report for this channel…", "post", {"channel": CHANNEL}),
])
def test_each_subcommand_acks_then_hands_its_flow_off(container: Container, text: str,
                                                      ack_text: str, flow: str,
                                                      arguments: dict[str, Any]) -> None:
    ack, respond = slash(container, text)
    assert ack.text == ack_text
    [work] = handed(container)
    assert work.name == text.split()[0].lower()
    assert work.flow == flow
    assert arguments.items() <= work.arguments.items()
    assert respond.said == []  # the answer comes from the flow, later


def test_schema_review_acks_empty_and_opens_the_modal_afterwards(container: Container) -> None:
    ack, _ = slash(container, "schema review")
    assert ack.calls == [{}]
    [work] = handed(container)
    assert work.flow == "_schema" and work.arguments["name"] == commands.REVIEW
    assert work.arguments["asked"] == commands.Asked(CHANNEL, USER, "T.1")


def test_a_failed_flow_tells_the_person_what_failed(container: Container) -> None:
    _, respond = slash(container, "status")
    [work] = handed(container)
    assert work.on_error is not None
    asyncio.run(work.on_error(RuntimeError("statistics view vanished")))
    asyncio.run(work.on_error(UserError("An analysis is already running in this channel.")))
    assert [s["text"] for s in respond.said] == [
        "hotdata could not finish `status`: statistics view vanished",
        "An analysis is already running in this channel."]
    assert all(s["response_type"] == "ephemeral" and s["replace_original"] is False
               for s in respond.said)


def test_a_failure_never_shows_a_secret(container: Container) -> None:
    _, respond = slash(container, "lint")
    [work] = handed(container)
    assert work.on_error is not None
    asyncio.run(work.on_error(RuntimeError("token xoxb-listener-test-token refused")))
    assert respond.said[0]["text"] == "hotdata could not finish `lint`: token *** refused"


# --- buttons -------------------------------------------------------------------------------------


def click(container: Container, listener: Callable[..., Awaitable[None]],
          value: str) -> tuple[Ack, Handed]:
    ack = Ack()
    body = {"user": {"id": USER}, "actions": [{"value": value}], "trigger_id": "T.2"}
    asyncio.run(listener(ack=ack, body=body, respond=Respond(),
                         context={"container": container}))
    [work] = handed(container)
    return ack, work


@pytest.mark.parametrize(("listener", "flow"), [
    (actions.approve, "approve_clicked"), (actions.reject, "reject_clicked"),
    (actions.propose, "propose_for"), (actions.rollback, "rollback_clicked"),
    (actions.apply_now, "apply_now_clicked")])
def test_buttons_ack_then_hand_off_with_the_id_they_carry(
        container: Container, listener: Callable[..., Awaitable[None]], flow: str) -> None:
    ack, work = click(container, listener, "42")
    assert ack.calls == [{}]
    assert work.flow == flow
    assert work.arguments["user"] == USER
    assert 42 in work.arguments.values()


@pytest.mark.parametrize("value", ["", "²", "12a", "-1", "4 2"])
def test_a_button_without_a_plain_number_carries_no_id(container: Container,
                                                       value: str) -> None:
    _, work = click(container, actions.approve, value)
    assert work.arguments["proposal_id"] is None


@pytest.mark.parametrize(("value", "approved"), [
    ("42:0123456789ab", "0123456789ab"), ("42", None), ("42:", None), ("42:XYZ", None),
    ("42:0123456789abc", None), ("42:0123", None)])
def test_approve_hands_off_the_statement_digest_its_button_carries(
        container: Container, value: str, approved: str | None) -> None:
    _, work = click(container, actions.approve, value)
    assert work.arguments["proposal_id"] == 42 and work.arguments["approved"] == approved


def test_reject_keeps_the_trigger_for_the_modal(container: Container) -> None:
    _, work = click(container, actions.reject, "7")
    assert work.arguments["trigger_id"] == "T.2"


# --- modals --------------------------------------------------------------------------------------


def submit(container: Container, listener: Callable[..., Awaitable[None]], block: str,
           value: str, metadata: str) -> Ack:
    ack = Ack()
    view = {"private_metadata": metadata,
            "state": {"values": {block: {block: {"type": "plain_text_input", "value": value}}}}}
    asyncio.run(listener(ack=ack, body={"user": {"id": USER}}, view=view,
                         context={"container": container}))
    return ack


def test_a_reviewed_plan_is_handed_off_for_the_channel_it_came_from(
        container: Container) -> None:
    ack = submit(container, views.schema_review, "plan", "CREATE TABLE a (id int);", CHANNEL)
    assert ack.calls == [{}]
    [work] = handed(container)
    assert work.flow == "review_in_channel"
    assert work.arguments["channel"] == CHANNEL and work.arguments["user"] == USER
    assert work.arguments["plan_text"] == "CREATE TABLE a (id int);"


def test_a_rejection_needs_a_reason_before_anything_is_handed_off(
        container: Container) -> None:
    ack = submit(container, views.reject_reason, "reason", " no ", "7")
    assert ack.calls == [{"response_action": "errors",
                          "errors": {"reason": "Say why, in a few words: the team will read "
                                               "it."}}]
    assert handed(container) == []
    ack = submit(container, views.reject_reason, "reason", "Too big for the launch", "7")
    assert ack.calls == [{}]
    [work] = handed(container)
    assert work.flow == "reject_submitted"
    assert (work.arguments["proposal_id"], work.arguments["reason"]) == (
        7, "Too big for the launch")
