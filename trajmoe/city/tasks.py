"""The prediction tasks every model and verb is asked for (torch-free: the CLI imports it)."""

from __future__ import annotations

from trajmoe.errors import TrajMoEError

# The two prediction tasks. ``next``: where is the person's next visit (its time unknown, the
# protocol's task). ``at-time``: where is the next visit given WHEN it happens (its local hour,
# weekday and the gap since the current visit are inputs; its place never is), the task of most
# next-POI work (Flashback, STAN, GETNext, TPG) and the planners' "where will people be at 8 am".
TASKS = ("next", "at-time")


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`, else a TrajMoEError naming them."""
    if task not in TASKS:
        raise TrajMoEError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    return task
