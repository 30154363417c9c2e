"""Whatever reaches the HTTP port: only a request signed with the signing secret, and fresh, is
read (401 otherwise, before any parsing); a signed one that is malformed gets 400, or an answer
that says so; never a 500, never a traceback in the log."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SIGNING_SECRET
from tests.harness import BotUnderTest

HEADERS = st.dictionaries(
    st.sampled_from(["X-Slack-Request-Timestamp", "X-Slack-Signature", "Content-Type"]),
    st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
              st.just("v0=" + "0" * 64),
              st.just(str(int(time.time()))), st.just("application/json")), max_size=3)


def post(bot: BotUnderTest, body: bytes, headers: dict[str, str]) -> int:
    assert bot.requests is not None
    request = urllib.request.Request(bot.requests.events_url, data=body, method="POST",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def signed(body: bytes, content_type: str = "application/x-www-form-urlencoded",
           secret: str = SIGNING_SECRET) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body,
                      hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest,
            "Content-Type": content_type}


def tracebacks(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.exc_info or "Traceback" in r.getMessage()]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300), headers=HEADERS)
def test_anything_unsigned_is_401(bot: BotUnderTest, body: bytes,
                                  headers: dict[str, str]) -> None:
    assert post(bot, body, headers) == 401


def test_a_non_numeric_timestamp_or_another_secret_is_401(bot: BotUnderTest,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    body = urlencode({"command": "/hotdata", "text": "help"}).encode()
    headers = signed(body)
    assert post(bot, body, {**headers, "X-Slack-Request-Timestamp": "soon"}) == 401
    assert post(bot, body, signed(body, secret="another-secret")) == 401
    assert post(bot, b"payload=notjson", {}) == 401
    assert tracebacks(caplog.records) == []


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def interaction(payload: Any) -> bytes:
    return urlencode({"payload": payload if isinstance(payload, str)
                      else json.dumps(payload)}).encode()


def block_actions(**changes: Any) -> dict[str, Any]:
    payload = {"type": "block_actions", "team": {"id": "T0HOTDASH"},
               "user": {"id": "U0ENGINEER"}, "api_app_id": "A0HOTDATA", "trigger_id": "t",
               "response_url": "http://127.0.0.1:9/response_url/x",
               "actions": [{"type": "button", "action_id": "hotdata_approve", "value": "1",
                            "block_id": "b", "action_ts": "1"}]}
    payload.update(changes)
    return payload


def view_submission(**changes: Any) -> dict[str, Any]:
    view = {"id": "V1", "type": "modal", "callback_id": "hotdata_reject_reason",
            "private_metadata": "1", "team_id": "T0HOTDASH", "app_id": "A0HOTDATA",
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input",
                                                       "value": "a good reason"}}}}}
    view.update(changes)
    return {"type": "view_submission", "team": {"id": "T0HOTDASH"},
            "user": {"id": "U0ENGINEER"}, "api_app_id": "A0HOTDATA", "view": view}


@pytest.mark.parametrize(("body", "content_type"), [
    (b"payload=notjson", "application/x-www-form-urlencoded"),
    (json.dumps({"type": "block_actions"}).encode(), "application/json"),
    (b"\xff\xfe\x00payload=\xc3\x28", "application/x-www-form-urlencoded"),
    (interaction(deep(5000)), "application/x-www-form-urlencoded"),
    (interaction({"type": "never_heard_of"}), "application/x-www-form-urlencoded"),
    (interaction(block_actions(user=None)), "application/x-www-form-urlencoded"),
    (interaction(block_actions(actions=[])), "application/x-www-form-urlencoded"),
    (interaction(view_submission(private_metadata="not-a-number")),
     "application/x-www-form-urlencoded"),
    (interaction(view_submission(state=None)), "application/x-www-form-urlencoded"),
    (urlencode({"command": "/hotdata", "text": "status"}).encode(),
     "application/x-www-form-urlencoded"),
    (b"", "application/x-www-form-urlencoded"),
])
def test_signed_but_malformed_is_400_or_answered(bot: BotUnderTest, body: bytes,
                                                 content_type: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    status = post(bot, body, signed(body, content_type))
    assert status in (200, 400)
    bot.run(bot.container.tasks.drain(timeout=30))
    assert tracebacks(caplog.records) == []


def test_a_button_value_that_is_no_plain_number_is_answered(bot: BotUnderTest) -> None:
    assert bot.requests is not None
    reply = bot.requests.click("hotdata_approve", "²", user="U0MANAGER")
    assert reply.status == 200
    [said] = bot.slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
    assert said.params["text"] == "This button does not carry a proposal id."
