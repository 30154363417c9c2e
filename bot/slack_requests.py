"""Requests into the app, signed exactly as Slack signs them (v0 HMAC-SHA256).

What a person does in Slack: type a slash command, click a button, submit a modal. Used by
the tests, the benchmarks and the demo.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


def signature(secret: str, timestamp: str, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature(secret, ts, body),
            "Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Reply:
    status: int
    body: str
    elapsed_ms: float
    response_key: str = ""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def text(self) -> str:
        """The ack's text when the app answered JSON, otherwise the raw body."""
        try:
            data = self.json()
        except ValueError:
            return self.body
        return data.get("text", "") if isinstance(data, dict) else self.body


class SlackRequests:
    """Sends signed requests to `events_url` (…/slack/events)."""

    def __init__(self, events_url: str, secret: str, fake_slack_url: str,
                 team_id: str = "T0HOTDASH", channel: str = "C0HOTDATA") -> None:
        self.events_url = events_url
        self.secret = secret
        self.fake_slack_url = fake_slack_url
        self.team_id = team_id
        self.channel = channel

    def post(self, body: str, headers: dict[str, str], key: str = "") -> Reply:
        request = urllib.request.Request(self.events_url, data=body.encode(), headers=headers,
                                         method="POST")
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        return Reply(status, text, (time.perf_counter() - started) * 1000, key)

    def send(self, form: dict[str, str], *, timestamp: int | None = None,
             secret: str | None = None, key: str = "") -> Reply:
        body = urlencode(form)
        return self.post(body, signed_headers(secret or self.secret, body, timestamp), key)

    def slash_form(self, text: str, user: str, channel: str | None = None,
                   key: str | None = None) -> tuple[dict[str, str], str]:
        key = key or uuid.uuid4().hex
        form = {
            "token": "legacy-unused", "team_id": self.team_id, "team_domain": "hotdash",
            "channel_id": channel or self.channel, "channel_name": "db-ops",
            "user_id": user, "user_name": user.lower(), "command": "/hotdata", "text": text,
            "api_app_id": "A0HOTDATA", "is_enterprise_install": "false",
            "response_url": f"{self.fake_slack_url}response_url/{key}",
            "trigger_id": f"trigger-{key}",
        }
        return form, key

    def slash(self, text: str, user: str = "U0ENGINEER", channel: str | None = None,
              **kwargs: Any) -> Reply:
        """`/hotdata <text>` typed by `user`."""
        form, key = self.slash_form(text, user, channel)
        return self.send(form, key=key, **kwargs)

    def event(self, event: dict[str, Any]) -> Reply:
        """An Events API callback (`app_home_opened`…), signed as Slack signs it."""
        body = json.dumps({"token": "legacy-unused", "team_id": self.team_id,
                           "api_app_id": "A0HOTDATA", "event": event, "type": "event_callback",
                           "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
                           "event_time": int(time.time())})
        headers = {**signed_headers(self.secret, body), "Content-Type": "application/json"}
        return self.post(body, headers)

    def interaction(self, payload: dict[str, Any], **kwargs: Any) -> Reply:
        return self.send({"payload": json.dumps(payload)}, **kwargs)

    def click(self, action_id: str, value: str, user: str = "U0ENGINEER",
              message_ts: str = "1.000001", channel: str | None = None, **kwargs: Any) -> Reply:
        """A button on a message, clicked by `user`."""
        key = uuid.uuid4().hex
        payload = {
            "type": "block_actions", "team": {"id": self.team_id, "domain": "hotdash"},
            "user": {"id": user, "username": user.lower(), "team_id": self.team_id},
            "api_app_id": "A0HOTDATA", "token": "legacy-unused",
            "container": {"type": "message", "message_ts": message_ts,
                          "channel_id": channel or self.channel, "is_ephemeral": False},
            "trigger_id": f"trigger-{key}",
            "channel": {"id": channel or self.channel, "name": "db-ops"},
            "message": {"type": "message", "ts": message_ts, "text": ""},
            "response_url": f"{self.fake_slack_url}response_url/{key}",
            "actions": [{"type": "button", "action_id": action_id, "block_id": "decision",
                         "value": value, "action_ts": f"{time.time():.6f}"}],
        }
        return self.interaction(payload, key=key, **kwargs)

    def submit_view(self, callback_id: str, values: dict[str, dict[str, Any]],
                    private_metadata: str = "", user: str = "U0ENGINEER",
                    **kwargs: Any) -> Reply:
        """A modal submitted by `user`; `values` is block_id → action_id → element state."""
        payload = {
            "type": "view_submission", "team": {"id": self.team_id, "domain": "hotdash"},
            "user": {"id": user, "username": user.lower(), "team_id": self.team_id},
            "api_app_id": "A0HOTDATA", "token": "legacy-unused",
            "trigger_id": f"trigger-{uuid.uuid4().hex}",
            "view": {"id": "V0MODAL", "type": "modal", "callback_id": callback_id,
                     "private_metadata": private_metadata, "state": {"values": values},
                     "team_id": self.team_id, "app_id": "A0HOTDATA"},
        }
        return self.interaction(payload, **kwargs)
