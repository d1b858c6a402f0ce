"""One writer at a time: `refresh` and `forget` hold `ws/.lock` (an advisory flock, freed even by kill -9)."""

from __future__ import annotations

import fcntl
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from embeddings.errors import WorkspaceError

LOCK = ".lock"
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def workspace_lock(root: str | Path, what: str) -> Iterator[None]:
    """Hold the workspace's write lock for `what`; a second holder gets an error naming the first."""
    path = Path(root) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "another process"
            raise WorkspaceError(
                f"Workspace {root} is busy: {holder} holds {path}. Wait for it to finish and run this again "
                "(the lock is released when that process ends, even if it is killed)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{what} (pid {os.getpid()}, since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC)".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holds_lock(what: str, arg: str = "workspace") -> Callable[[F], F]:
    """Decorate a function that writes the workspace named by its parameter `arg` to hold the lock while it runs."""

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with workspace_lock(sig.bind(*args, **kwargs).arguments[arg], what):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco
