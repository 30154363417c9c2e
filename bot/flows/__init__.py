"""The Slack use cases: the only code that puts domain results, rendering and the Slack client
together (see ARCHITECTURE.md). Domain packages return results and raise errors; a flow posts
them where a person sees them."""
