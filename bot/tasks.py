"""Background work that outlives a Slack ack: tracked, never lost, reported when it fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

OnError = Callable[[BaseException], Awaitable[None]]


class TaskTracker:
    """Holds a reference to every running task (so none is garbage-collected mid-flight),
    logs and reports its failure, and lets shutdown wait for the work in progress."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str,
              on_error: OnError | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(self._run(work, name, on_error), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _run(work: Coroutine[Any, Any, Any], name: str, on_error: OnError | None) -> Any:
        try:
            return await work
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("background task %s failed", name)
            if on_error is not None:
                try:
                    await on_error(error)
                except Exception:
                    log.exception("could not report the failure of %s", name)
            return None

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for running tasks; cancel what is still running after `timeout` seconds."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
