"""What every command shares: options, config loading, logging and the one-paragraph error handler."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from rich.console import Console

from embeddings.errors import SeqcohortError

console = Console(stderr=False)
err_console = Console(stderr=True)
EXIT_USAGE = 2


class Terminated(BaseException):
    """SIGTERM (a scheduler stopping a batch job): unwinds the command, so nothing half-built is published.

    Not a KeyboardInterrupt: Lightning answers that with sys.exit(1) mid-fit; other exceptions it re-raises.
    """


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind the command (Lightning's own handler only takes note of it and trains on)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "faiss", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Project errors -> one clean paragraph on stderr and exit code 2; Ctrl-C -> exit 130, SIGTERM -> 143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SeqcohortError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_USAGE)
        except (KeyboardInterrupt, Terminated) as e:
            err_console.print("interrupted: nothing was published; the workspace's `current` is unchanged.")
            sys.exit(143 if isinstance(e, Terminated) else 130)

    return wrapper


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                      help="Override any config key, e.g. --set trainer.max_steps=200 (repeatable).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                      help="YAML config file (see configs/seqcohort.yaml).")(fn)
    return fn


def map_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--map", "maps", multiple=True, metavar="CANONICAL=COLUMN",
                        help="Map your column to a canonical one, e.g. --map user_id=CustomerID (repeatable).")(fn)


def goal_alias_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--goal-alias", "aliases", multiple=True, metavar="EVENT",
                        help="Another event type that counts as the goal (repeatable), e.g. purchase_coupon: in "
                             "the labels the propensity is trained on, the scored outcomes and the RFM baseline.")(fn)


def workspace_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--workspace", "-w", type=click.Path(file_okay=False), default="workspace",
                        show_default=True, help="Workspace directory (versions + current).")(fn)


def load_cfg(config_path: str | None, sets: tuple[str, ...]):
    from embeddings.config import load_config

    return load_config(config_path, sets)


def parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        raise SeqcohortError(f"--as-of {value!r} is not an ISO timestamp; use e.g. 2026-01-01T00:00:00.") from None

