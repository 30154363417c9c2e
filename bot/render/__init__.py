"""Rendering of hotdata's results: Block Kit for Slack, markdown, JSON and rich text."""
