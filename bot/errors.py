"""One hierarchy for what a person is told: a UserError's message is shown as it is (it says
what went wrong and what to do, and holds no secret); anything else is an unexpected failure,
shown as "hotdata could not finish …" with its scrubbed reason (`bot.slack.describe`, the one
place that turns either into the text a person reads in Slack)."""

from __future__ import annotations


class UserError(Exception):
    """A refusal, a usage mistake, a busy channel, a missing setting: told as it is."""
