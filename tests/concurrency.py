"""Run one call per input in threads at once, the way concurrent flow runs arrive."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable


def run_in_threads(call: Callable[[Any], Any], inputs: Iterable[Any],
                   timeout: float = 300) -> tuple[list, list[BaseException]]:
    """(results, errors): every call's return value or exception, in completion order."""
    results: list = []
    errors: list[BaseException] = []

    def run(item):
        try:
            results.append(call(item))
        except BaseException as exc:  # noqa: BLE001 - collected for the test to judge
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(item,)) for item in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return results, errors
