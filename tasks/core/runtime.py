"""How flows run in this process: Prefect settings that cut its own cost per run.

Prefect 3.9 starts a heartbeat thread for every flow run, subflows included, and joins it
when the run ends; the thread sleeps in whole seconds, so the join costs up to 1 s (0.75 s
of a 1.3 s empty flow run measured here: benchmarks/results/prefect.json). Heartbeats feed
a server-side automation that marks silent runs Crashed; this project defines none, and a
subflow's heartbeat only repeats its parent's (same process, same thread).

``flows.heartbeat_frequency = None`` is Prefect's documented "no heartbeats". The
environment cannot say it (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` takes an integer >= 30),
so it is set through Prefect's settings context, for one block, in this thread only.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def without_flow_heartbeats() -> Iterator[None]:
    """Flow runs started inside the block send no heartbeats, and so end without waiting
    for a heartbeat thread to wake up."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
