"""One hierarchy for what a person is told: a UserError's message is shown as it is (it says
what went wrong and what to do, and holds no secret); anything else is an unexpected failure,
shown as "hotdata could not finish …" with its scrubbed reason. `describe` is the one place
that turns either into the text a person reads."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

NOT_IN_CHANNEL = "hotdata is not a member of this channel: invite it with `/invite @hotdata`"


class UserError(Exception):
    """A refusal, a usage mistake, a busy channel, a missing setting: told as it is."""


def describe(error: BaseException, what: str) -> str:
    """The text a person reads when `what` (a command, a click) ended in `error`; scrub it
    with the settings' secrets before it is shown."""
    if isinstance(error, UserError):
        return str(error)
    reason = str(error) or type(error).__name__
    if isinstance(error, SlackApiError) and error.response.get("error") in (
            "not_in_channel", "channel_not_found"):
        reason = NOT_IN_CHANNEL
    return f"hotdata could not finish `{what}`: {reason}"
