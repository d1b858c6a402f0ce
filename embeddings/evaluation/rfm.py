"""RFM features and the classic 11-segment RFM segmentation: the hand-built baseline cohorts.

`rfm_features` turns canonical events into one row per user (recency, frequency, monetary and a
few engagement numbers) as seen at an `as_of` time. `RFMSegmenter` learns quintile edges on
those features and names each user with one of the 11 segments marketers know.

Quintile method (why it is not `pd.qcut`): frequency is usually heavily tied (half the users
bought once), so value-based quintiles collapse into two or three bins. Instead users are put
in a total order by (value, stable hash of user_id) and cut at ranks ceil(k*n/5), k = 1..4,
which gives five bins whose sizes differ by at most one. Tied users are split between bins by
the hash of their id: arbitrary but reproducible and independent of row order, and a new user
scored by `predict` lands exactly where they would have landed in the fitted population.
R is scored on (-recency_days), so more recent means a higher score.

Segment mapping: the widely used R vs FM table (the "regex" table of the popular RFM tutorials,
keyed on the R score and FM = floor((F + M) / 2)), with its lowest corner split off as "Lost":

    R \\ FM   1               2                   3                   4                5
    5        New Customers   Potential Loyalist  Potential Loyalist  Champions        Champions
    4        Promising       Potential Loyalist  Potential Loyalist  Loyal Customers  Loyal Customers
    3        About To Sleep  About To Sleep      Need Attention      Loyal Customers  Loyal Customers
    2        Hibernating     Hibernating         At Risk             At Risk          Can't Lose Them
    1        Lost            Hibernating         At Risk             At Risk          Can't Lose Them
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import polars as pl

from embeddings.errors import NotFittedError, SchemaError

logger = logging.getLogger(__name__)

__all__ = [
    "MARKETER_ORDER",
    "SEGMENT_TABLE",
    "RFMSegmenter",
    "check_events",
    "rfm_features",
    "segment_for",
    "to_naive_utc",
]

#: The 11 segments in the order marketers read them (best first, then the ones to win back).
MARKETER_ORDER: list[str] = [
    "Champions",
    "Loyal Customers",
    "Potential Loyalist",
    "New Customers",
    "Promising",
    "Need Attention",
    "Can't Lose Them",
    "At Risk",
    "About To Sleep",
    "Hibernating",
    "Lost",
]

#: SEGMENT_TABLE[r - 1][fm - 1] is the segment of R score r and FM score fm (see module docstring).
SEGMENT_TABLE: tuple[tuple[str, ...], ...] = (
    ("Lost", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"),  # R = 1
    ("Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"),  # R = 2
    ("About To Sleep", "About To Sleep", "Need Attention", "Loyal Customers", "Loyal Customers"),
    ("Promising", "Potential Loyalist", "Potential Loyalist", "Loyal Customers", "Loyal Customers"),
    ("New Customers", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"),
)

_US_PER_DAY = 86_400_000_000.0
_N_BINS = 5
# Which feature column each score is learned on, and whether larger values mean a higher score.
_SCORE_SPEC: dict[str, tuple[str, bool]] = {
    "r": ("recency_days", False),
    "f": ("frequency", True),
    "m": ("monetary", True),
}


def to_naive_utc(t: datetime) -> datetime:
    """Return `t` as a naive UTC datetime (the canonical `ts` convention)."""
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t


def check_events(
    events: pl.DataFrame, required: Sequence[str] = ("user_id", "ts", "event")
) -> None:
    """Raise SchemaError unless `events` has the canonical columns this module needs."""
    missing = [c for c in required if c not in events.columns]
    if missing:
        raise SchemaError(
            f"events are missing column(s) {missing}; got {events.columns}. "
            "Map your columns to the canonical schema (user_id, ts, event, ...) first."
        )
    ts_dtype = events.schema["ts"]
    if not isinstance(ts_dtype, pl.Datetime):
        raise SchemaError(
            f"events column 'ts' must be a Datetime, got {ts_dtype}; "
            "parse it with pl.col('ts').str.to_datetime() or go through embeddings.data.schema."
        )
    if ts_dtype.time_zone is not None:
        raise SchemaError(
            f"events column 'ts' has time zone {ts_dtype.time_zone!r}; the canonical schema is "
            "naive UTC: use pl.col('ts').dt.convert_time_zone('UTC').dt.replace_time_zone(None)."
        )


def rfm_features(
    events: pl.DataFrame,
    as_of: datetime,
    *,
    monetary_event: str | list[str] | None = None,
    log: bool = False,
) -> pl.DataFrame:
    """Per-user RFM and engagement features computed from events at or before `as_of`.

    Args:
        events: canonical events (user_id, ts, event, optional amount).
        as_of: the moment the features describe; later events are ignored, and users whose
            events all come later are absent.
        monetary_event: event type(s) that count as a transaction (e.g. "purchase"). None: every
            event is a transaction.
        log: also add log1p versions of recency_days, frequency and monetary.

    Returns:
        One row per user, sorted by user_id:
        - recency_days: days from the last event (of any type) to `as_of`.
        - frequency: number of transactions = distinct timestamps among transaction events
          (lines of one basket logged at the same instant count once); 0 if none.
        - monetary: total `amount` of transaction events (nulls/NaN as 0; 0 without amounts).
        - avg_amount: monetary / frequency (0 when frequency is 0).
        - tenure_days: days from the first event to `as_of` (customer age).
        - n_events: events of any type; n_active_days: distinct calendar days (UTC) with events.
    """
    check_events(events)
    as_of = to_naive_utc(as_of)
    seen = events.filter(pl.col("ts") <= as_of)
    n_late = events.height - seen.height
    if n_late:
        logger.debug("rfm_features: ignoring %d events after as_of=%s", n_late, as_of)
    tx_types = [monetary_event] if isinstance(monetary_event, str) else monetary_event
    if tx_types is not None and seen.filter(pl.col("event").is_in(tx_types)).is_empty():
        logger.warning(
            "rfm_features: no %r events at or before %s; frequency and monetary are all 0",
            monetary_event,
            as_of,
        )

    if "amount" in seen.columns:
        amount = pl.col("amount").cast(pl.Float64).fill_nan(None).fill_null(0.0)
    else:
        amount = pl.lit(0.0, dtype=pl.Float64)
    is_tx = pl.col("event").is_in(tx_types) if tx_types is not None else pl.lit(True)
    as_of_lit = pl.lit(as_of, dtype=pl.Datetime("us"))

    out = (
        seen.group_by("user_id")
        .agg(
            _last=pl.col("ts").max(),
            _first=pl.col("ts").min(),
            frequency=pl.col("ts").filter(is_tx).n_unique().cast(pl.Int64),
            monetary=amount.filter(is_tx).sum().cast(pl.Float64),
            n_events=pl.len().cast(pl.Int64),
            n_active_days=pl.col("ts").dt.date().n_unique().cast(pl.Int64),
        )
        .with_columns(
            recency_days=(as_of_lit - pl.col("_last")).dt.total_microseconds() / _US_PER_DAY,
            tenure_days=(as_of_lit - pl.col("_first")).dt.total_microseconds() / _US_PER_DAY,
            avg_amount=pl.when(pl.col("frequency") > 0)
            .then(pl.col("monetary") / pl.col("frequency"))
            .otherwise(0.0),
        )
        .select(
            "user_id",
            "recency_days",
            "frequency",
            "monetary",
            "avg_amount",
            "tenure_days",
            "n_events",
            "n_active_days",
        )
        .sort("user_id")
    )
    if log:
        out = out.with_columns(
            log_recency_days=pl.col("recency_days").log1p(),
            log_frequency=pl.col("frequency").cast(pl.Float64).log1p(),
            # Refunds can make monetary negative; log1p is only defined above -1.
            log_monetary=pl.col("monetary").clip(lower_bound=0.0).log1p(),
        )
    return out


def segment_for(r: int, fm: int) -> str:
    """Segment name of an R score and an FM score (both 1..5)."""
    return SEGMENT_TABLE[r - 1][fm - 1]


def _id_hash(user_ids: Iterable[str]) -> np.ndarray:
    """Stable 63-bit hash of each id (tie-breaker; same in every process and platform)."""
    digests = b"".join(
        hashlib.blake2b(str(u).encode("utf-8"), digest_size=8).digest() for u in user_ids
    )
    # Drop the top bit so the values fit int64 and survive a JSON round trip unchanged.
    return (np.frombuffer(digests, dtype=">u8") >> np.uint64(1)).astype(np.int64)


def _keys(features: pl.DataFrame, column: str, ascending: bool) -> np.ndarray:
    values = features.get_column(column).cast(pl.Float64).to_numpy()
    if np.isnan(values).any():
        raise SchemaError(f"RFM feature column {column!r} has null/NaN values; fill them first.")
    return values if ascending else -values


def _count_at_or_above(
    values: np.ndarray, hashes: np.ndarray, edges: Sequence[tuple[float, int]]
) -> np.ndarray:
    """Number of edges each (value, hash) key is lexicographically >= to."""
    count = np.zeros(values.shape[0], dtype=np.int8)
    for edge_value, edge_hash in edges:
        count += (values > edge_value) | ((values == edge_value) & (hashes >= edge_hash))
    return count


class RFMSegmenter:
    """Quintile R/F/M scores (1..5) and the 11 named segments, with edges learned in `fit`.

    Example:
        >>> feats = rfm_features(events, as_of, monetary_event="purchase")
        >>> seg = RFMSegmenter().fit(feats)
        >>> seg.predict(feats)  # user_id, r, f, m, segment
    """

    def __init__(self) -> None:
        # No hyper-parameters: five quintiles and the standard table are the point of a baseline.
        pass

    def fit(self, features: pl.DataFrame) -> RFMSegmenter:
        """Learn the quintile edges of recency, frequency and monetary on `features`."""
        self._check_features(features)
        n = features.height
        if n < _N_BINS:
            raise SchemaError(f"RFMSegmenter.fit needs at least {_N_BINS} users, got {n}.")
        hashes = _id_hash(features.get_column("user_id").to_list())
        edges: dict[str, list[tuple[float, int]]] = {}
        for score, (column, ascending) in _SCORE_SPEC.items():
            values = _keys(features, column, ascending)
            order = np.lexsort((hashes, values))  # last key is primary
            positions = [math.ceil(k * n / _N_BINS) for k in range(1, _N_BINS)]
            edges[score] = [(float(values[order[p]]), int(hashes[order[p]])) for p in positions]
        self.edges_ = edges
        self.n_users_ = n
        logger.info("RFMSegmenter fitted on %d users", n)
        return self

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        """Score users with the fitted edges: user_id, r, f, m (Int8, 1..5) and segment."""
        if not hasattr(self, "edges_"):
            raise NotFittedError(
                "This RFMSegmenter is not fitted yet; call fit(features) before predict."
            )
        self._check_features(features)
        hashes = _id_hash(features.get_column("user_id").to_list())
        scores = {
            score: 1 + _count_at_or_above(_keys(features, column, asc), hashes, self.edges_[score])
            for score, (column, asc) in _SCORE_SPEC.items()
        }
        fm = (scores["f"].astype(np.int64) + scores["m"]) // 2
        table = np.array(SEGMENT_TABLE, dtype=object)
        segments = table[scores["r"] - 1, fm - 1]
        return pl.DataFrame(
            {
                "user_id": features.get_column("user_id"),
                "r": pl.Series(scores["r"], dtype=pl.Int8),
                "f": pl.Series(scores["f"], dtype=pl.Int8),
                "m": pl.Series(scores["m"], dtype=pl.Int8),
                "segment": pl.Series(segments.tolist(), dtype=pl.String),
            }
        )

    def fit_predict(self, features: pl.DataFrame) -> pl.DataFrame:
        """`fit(features).predict(features)`."""
        return self.fit(features).predict(features)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fitted state (edges as [value, id_hash] pairs)."""
        if not hasattr(self, "edges_"):
            raise NotFittedError("This RFMSegmenter is not fitted yet; nothing to save.")
        return {
            "n_users": self.n_users_,
            "edges": {k: [list(e) for e in v] for k, v in self.edges_.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RFMSegmenter:
        """Rebuild a fitted segmenter from `to_dict` output."""
        seg = cls()
        seg.edges_ = {k: [(float(v), int(h)) for v, h in e] for k, e in d["edges"].items()}
        seg.n_users_ = int(d["n_users"])
        return seg

    @staticmethod
    def _check_features(features: pl.DataFrame) -> None:
        needed = ["user_id", *(col for col, _ in _SCORE_SPEC.values())]
        missing = [c for c in needed if c not in features.columns]
        if missing:
            raise SchemaError(
                f"RFM features are missing column(s) {missing}; build them with rfm_features()."
            )
