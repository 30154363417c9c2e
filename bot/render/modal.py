"""A modal with one text field: what the reject-reason and schema-review modals have in common."""

from __future__ import annotations

from typing import Any


def text_modal(callback_id: str, metadata: str, title: str, submit: str, field: str,
               label: str, min_length: int, max_length: int) -> dict[str, Any]:
    """The field's block and action ids are both `field`; Slack enforces the lengths."""
    return {
        "type": "modal", "callback_id": callback_id, "private_metadata": metadata,
        "title": {"type": "plain_text", "text": title[:24]},
        "submit": {"type": "plain_text", "text": submit},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{"type": "input", "block_id": field,
                    "label": {"type": "plain_text", "text": label},
                    "element": {"type": "plain_text_input", "action_id": field,
                                "multiline": True, "min_length": min_length,
                                "max_length": max_length}}],
    }
