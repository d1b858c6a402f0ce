"""Fault injection for the scale-out tests: kill this process the first n times a step runs.

The spec is "<directory>:<n>"; each kill leaves a file in the directory, so a restarted worker
(a new process) sees how many kills have happened. The driver reads it from the environment
(SEQCOHORT_CHAOS_EMBED, SEQCOHORT_CHAOS_TRAIN) and hands it to its workers; unset, nothing happens.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def kill_if_due(spec: str | None) -> None:
    """SIGKILL this process if fewer than n kills are recorded in the spec's directory."""
    if not spec:
        return
    folder, n = spec.rsplit(":", 1)
    Path(folder).mkdir(parents=True, exist_ok=True)
    if len(list(Path(folder).iterdir())) < int(n):
        (Path(folder) / f"kill-{os.getpid()}-{time.monotonic_ns()}").touch()
        os.kill(os.getpid(), signal.SIGKILL)
