"""Deterministic experiment arms: a user's arm is a pure function of (experiment, salt, user_id).

Each id is hashed with BLAKE2b (never Python's per-process `hash()`) into a uniform number in
[0, 1), which falls into one arm's slice of the cumulative weights, in the order the arms are
given. Consequences worth knowing:
- the same user gets the same arm in every call, process and machine;
- adding users never moves existing ones (each user's arm depends only on their own id);
- changing the weights or the order of the arms does move users: start a new experiment name
  (or salt) instead of editing a running one;
- a new `salt` reshuffles everyone, which is how to re-randomise between experiments that
  would otherwise share an experiment name.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np
import polars as pl

from embeddings.errors import ConfigError, SchemaError

logger = logging.getLogger(__name__)

__all__ = ["assign_arms", "hash_uniform", "validate_arms"]

_WEIGHT_TOL = 1e-6


def validate_arms(arms: Mapping[str, float]) -> dict[str, float]:
    """Check arm weights (non-empty names, positive, summing to 1) and return them as a dict."""
    if not arms:
        raise ConfigError("No arms given: pass e.g. {'control': 0.5, 'treatment': 0.5}.")
    out: dict[str, float] = {}
    for name, weight in arms.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"Arm names must be non-empty strings, got {name!r}.")
        w = float(weight)
        if not math.isfinite(w) or w <= 0:
            raise ConfigError(f"Arm {name!r} has weight {weight!r}; weights must be > 0.")
        out[name] = w
    total = sum(out.values())
    if abs(total - 1.0) > _WEIGHT_TOL:
        raise ConfigError(
            f"Arm weights must sum to 1, got {total:.6g} for {out}. "
            "Scale them, e.g. {'holdout': 0.1, 'control': 0.45, 'treatment': 0.45}."
        )
    return out


def hash_uniform(keys: Iterable[str]) -> np.ndarray:
    """Map each key to a stable uniform float64 in [0, 1) from its BLAKE2b-64 digest."""
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(k.encode("utf-8"), digest_size=8).digest() for k in keys])
    h = np.frombuffer(digests, dtype=">u8")
    # The top 53 bits are exactly representable as a float64 fraction, so u < 1 always.
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def assign_arms(
    user_ids: Iterable[str] | pl.Series,
    experiment: str,
    arms: Mapping[str, float],
    salt: str = "",
    *,
    holdout: str | None = "holdout",
) -> pl.DataFrame:
    """Assign each user to an arm by hashing f"{experiment}:{salt}:{user_id}".

    Args:
        user_ids: ids (strings, or anything whose str() is the id); duplicates are collapsed.
        experiment: experiment name; part of the hash, so experiments are independent.
        arms: arm name -> weight, summing to 1, e.g. {"holdout": 0.1, "control": 0.45,
            "treatment": 0.45}. Order matters (it lays out the [0, 1) slices).
        salt: extra hash input to re-randomise.
        holdout: name of the arm exempt from every campaign (flagged in `is_holdout`).

    Returns:
        user_id (String), arm (String), is_holdout (Boolean), in first-seen order of the ids.
    """
    weights = validate_arms(arms)
    if not experiment:
        raise ConfigError("assign_arms needs an experiment name (it seeds the hash).")
    ids = pl.Series("user_id", user_ids) if not isinstance(user_ids, pl.Series) else user_ids
    ids = ids.rename("user_id")
    if ids.null_count():
        raise SchemaError(
            f"{ids.null_count()} user id(s) are null; every user needs an id to get an arm."
        )
    ids = ids.cast(pl.String)
    unique = ids.unique(maintain_order=True)
    if unique.len() < ids.len():
        logger.warning("assign_arms: collapsed %d duplicate user ids", ids.len() - unique.len())
    # Build the hash keys in polars (fast string concat), then hash them in one tight loop.
    keys = pl.select(pl.lit(f"{experiment}:{salt}:") + unique).to_series().to_list()
    u = hash_uniform(keys)
    names = list(weights)
    edges = np.cumsum(list(weights.values()))
    edges[-1] = 1.0  # float rounding must never leave a sliver of [0, 1) without an arm
    index = np.searchsorted(edges, u, side="right")
    arm = pl.Series("arm", names, dtype=pl.String).gather(index)
    out = pl.DataFrame([unique, arm]).with_columns(
        is_holdout=pl.col("arm") == holdout if holdout is not None else pl.lit(False)
    )
    if holdout is not None and holdout not in weights:
        logger.debug("assign_arms: no %r arm in %s; is_holdout is all False", holdout, names)
    logger.info(
        "assign_arms(%s): %d users into %s",
        experiment,
        out.height,
        dict(out.group_by("arm").len().iter_rows()),
    )
    return out
