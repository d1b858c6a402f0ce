"""Per-event features: canonical events -> integer/float arrays per field, and padded batches.

A `Featurizer` is fitted once on training events (vocabularies, amount scale) and saved as JSON
inside the encoder bundle, so that embedding time sees exactly the features training saw.

Layout after `transform`: `SequenceData`, a CSR-like structure. All events of all users sit in
flat per-field arrays, user i owns rows `offsets[i]:offsets[i+1]` in time order. Batching is then
slicing, and sub-sequence sampling for training is index arithmetic.

Id conventions for categorical fields: 0 = padding, 1 = missing (null), 2 = out of vocabulary,
3.. = vocabulary entries.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import torch

from embeddings.data.schema import sort_by_user_time
from embeddings.errors import BundleError, SchemaError
from embeddings.features.item_text import MAX_CHARS, ItemText

PAD, MISSING, OOV = 0, 1, 2
N_SPECIAL = 3
GAP_BUCKETS = 26  # log2 buckets of seconds since the previous event (2^24 s ~ 194 days) + "first event"
RECENCY_BUCKETS = 28  # log2 buckets of seconds before as_of (2^27 s ~ 4 years)
FIRST_GAP = GAP_BUCKETS - 1  # bucket of a sequence's first event (no previous event known)
N_CONTEXT = 5  # aggregates of a batch row's events: count, recency, spend, tenure, active days
CONTEXT_SPEND = 2  # the context column holding log1p(total spend) / 8
CONTEXT_DAYS = 4  # the context column holding log1p(active days) / 5
LOG_RECENCY_SCALE = 3.0  # log_recency = log1p(days before as_of) / LOG_RECENCY_SCALE
SESSION_GAP_S = 1800.0  # a new session starts after 30 minutes without events
SESSION_POS = 32  # position of an event inside its session, clipped (funnel order: search -> cart -> buy)
TRANSITION_TYPES = 64  # event ids kept apart in the (previous event, event) pair; rarer ones fold into OOV
EXTRA_Z_MAX = 50.0  # standardised extra numeric values are clipped here: one absurd value (1e300) would be inf in float32


def standardise_extra(v: np.ndarray, mu: float, sd: float) -> np.ndarray:
    """(v - mu) / sd as float32; missing or infinite -> 0, finite outliers clipped to +-EXTRA_Z_MAX."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.nan_to_num((np.asarray(v, dtype=np.float64) - mu) / sd, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(z, -EXTRA_Z_MAX, EXTRA_Z_MAX).astype(np.float32)


def whole_history_context(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, N_CONTEXT) aggregates of each user's whole history: `history_context` where
    `collate_users` built the batch, else `context` (a plain `collate` batch holds its rows only)."""
    return batch["history_context"] if "history_context" in batch else batch["context"]


@dataclass
class FeaturizerConfig:
    """Which fields are featurised and how; saved in the bundle as `featurizer.json`."""

    item_buckets: int = 8192  # hashed item ids: open vocabulary, new items never break anything
    amount_buckets: int = 16  # log buckets per sign of the amount
    max_vocab: int = 2000  # per categorical field, most frequent first
    min_count: int = 1  # rarer values map to OOV
    extra_categorical: list[str] = field(default_factory=list)
    extra_numeric: list[str] = field(default_factory=list)
    # (previous event, event) pairs as one token: the order of events survives mean pooling as
    # directly as their hour does (order twins: search -> cart -> buy vs cart -> buy -> search)
    transitions: bool = True
    # item titles (the `text` column) as `item_text_dim` PCA coordinates of their sentence-transformers
    # embeddings, per event (embeddings/features/item_text.py); on only where the fitted log had titles
    item_text: bool = False
    item_text_dim: int = 16
    item_text_model: str | None = None  # a local sentence-transformers directory; None = the packaged MiniLM


def transition_ids(prev_event: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Id of each (previous event, event) pair; 0 where both are padding. Works on arrays and tensors."""
    fold = TRANSITION_TYPES
    p = prev_event * (prev_event < fold) + OOV * (prev_event >= fold)
    e = event * (event < fold) + OOV * (event >= fold)
    return p * fold + e


@dataclass
class SequenceData:
    """Featurised events of many users, flat per field (see module docstring)."""

    user_ids: np.ndarray  # (n_users,) object (str)
    offsets: np.ndarray  # (n_users + 1,) int64
    fields: dict[str, np.ndarray]  # name -> (n_events,) int64 (categorical) or float32 (numeric)
    as_of: datetime | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.user_ids)

    def subset(self, rows: np.ndarray) -> SequenceData:
        """Users at `rows` (positions), keeping their full histories."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        idx = _ranges(starts, ends)
        offsets = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
        return SequenceData(self.user_ids[rows], offsets, {k: v[idx] for k, v in self.fields.items()}, self.as_of)


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, e) for each pair, vectorised."""
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    rep_starts = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return np.arange(total, dtype=np.int64) + rep_starts


def stable_hash_bucket(values: pl.Series, n_buckets: int) -> pl.Series:
    """CRC32 of each string mod n_buckets (+N_SPECIAL); stable across processes and versions."""
    uniq = values.drop_nulls().unique()
    codes = [zlib.crc32(s.encode("utf-8")) % n_buckets + N_SPECIAL for s in uniq.to_list()]
    mapping = pl.DataFrame({"k": uniq, "v": pl.Series(codes, dtype=pl.Int64)})
    out = (
        pl.DataFrame({"k": values})
        .join(mapping, on="k", how="left", maintain_order="left")
        .get_column("v")
        .fill_null(MISSING)
    )
    return out


class Featurizer:
    """Fits vocabularies and scales on events; turns events into `SequenceData` and batches."""

    def __init__(self, config: FeaturizerConfig | None = None) -> None:
        self.config = config or FeaturizerConfig()
        self.vocabs_: dict[str, list[str]] | None = None
        self.numeric_stats_: dict[str, tuple[float, float]] | None = None
        self.item_text_: ItemText | None = None  # fitted when config.item_text and the log has titles

    # ----------------------------------------------------------------- fitting
    @property
    def categorical_fields(self) -> list[str]:
        return ["event", "category", *self.config.extra_categorical]

    def fit(self, events: pl.DataFrame) -> Featurizer:
        self._check_columns(events)
        vocabs: dict[str, list[str]] = {}
        for col in self.categorical_fields:
            counts = (
                events.get_column(col).drop_nulls().cast(pl.String).value_counts(sort=True)
            )
            counts = counts.filter(pl.col("count") >= self.config.min_count)
            # sort by count desc, then value, so the vocabulary is deterministic
            counts = counts.sort(["count", col], descending=[True, False])
            vocabs[col] = counts.get_column(col).head(self.config.max_vocab).to_list()
        stats: dict[str, tuple[float, float]] = {}
        amt = events.get_column("amount").cast(pl.Float64).drop_nulls().drop_nans()
        la = np.log1p(np.abs(amt.to_numpy())) if len(amt) else np.zeros(1)
        stats["amount"] = (0.0, float(max(la.std(), 1e-3)))
        for col in self.config.extra_numeric:
            v = events.get_column(col).cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
            v = v[np.isfinite(v)] if len(v) else np.zeros(1)
            stats[col] = (float(v.mean()), float(max(v.std(), 1e-6)))
        self.vocabs_, self.numeric_stats_ = vocabs, stats
        self.item_text_ = None
        if self.config.item_text and "text" in events.columns:
            text = events.get_column("text").cast(pl.String)
            empty = int((text.str.strip_chars() == "").sum())
            titles = [t for t in text.unique().to_list() if t is not None and t.strip()]
            if titles:  # auto: a log whose titles are all missing or empty reads none
                self.item_text_ = ItemText(self.config.item_text_dim, self.config.item_text_model).fit(titles)
                self.item_text_.counts_["empty"] = empty
                self.item_text_.counts_["truncated"] = int((text.str.len_chars() > MAX_CHARS).sum())
        return self

    def _check_fitted(self) -> None:
        if self.vocabs_ is None:
            raise BundleError("Featurizer is not fitted: call fit(events) or load it from a bundle.")

    def _check_columns(self, events: pl.DataFrame) -> None:
        need = ["user_id", "ts", "event", "item", "category", "amount"]
        need += self.config.extra_categorical + self.config.extra_numeric
        missing = [c for c in need if c not in events.columns]
        if missing:
            raise SchemaError(
                f"Events lack column(s) {missing} that the featurizer needs (found {events.columns}). "
                "Load events through embeddings.data.schema.read_events so optional columns are added."
            )

    @property
    def cardinalities(self) -> dict[str, int]:
        """Embedding table size per categorical field (including the special ids)."""
        self._check_fitted()
        assert self.vocabs_ is not None
        card = {c: len(v) + N_SPECIAL for c, v in self.vocabs_.items()}
        card["prev_event"] = card["event"]
        if self.config.transitions:
            card["transition"] = TRANSITION_TYPES * TRANSITION_TYPES
        card["item"] = self.config.item_buckets + N_SPECIAL
        card["amount_bucket"] = 2 * self.config.amount_buckets + N_SPECIAL
        card["gap"] = GAP_BUCKETS
        card["recency"] = RECENCY_BUCKETS
        card["session_pos"] = SESSION_POS + 1
        card["hour"] = 24 + 1
        card["weekday"] = 7 + 1
        return card

    @property
    def numeric_fields(self) -> list[str]:
        return ["amount_value", "log_recency", *self.config.extra_numeric, *self.text_fields]

    @property
    def text_fields(self) -> list[str]:
        """The per-event title coordinates (`text_0` ...), empty without fitted titles."""
        return [] if self.item_text_ is None else [f"text_{j}" for j in range(self.item_text_.dim)]

    def text_columns(self, titles: list[str | None] | pl.Series) -> dict[str, np.ndarray]:
        """`text_j` arrays (n,) float32 of each event's title; missing titles -> zeros."""
        if self.item_text_ is None:
            return {}
        s = (titles if isinstance(titles, pl.Series) else pl.Series(titles, dtype=pl.String)).cast(pl.String)
        uniq = s.unique(maintain_order=True)
        V = self.item_text_.vectors(uniq.to_list())  # (n_distinct, dim), each distinct title looked up once
        # each event's row of V, matched in polars: a Python list of millions of titles would cost GBs
        idx = (pl.DataFrame({"t": s})
               .join(pl.DataFrame({"t": uniq, "i": np.arange(len(uniq))}), on="t", how="left", nulls_equal=True,
                     maintain_order="left")
               .get_column("i").to_numpy())
        return {name: np.ascontiguousarray(V[idx, j]) for j, name in enumerate(self.text_fields)}

    # ----------------------------------------------------------------- transform
    def transform(self, events: pl.DataFrame, as_of: datetime | None = None) -> SequenceData:
        """Featurise canonical events (any order) into per-user sequences sorted by time.

        `as_of` is the time recency is measured against; default: the latest event.
        Events after `as_of` are an error, not silently dropped.
        """
        self._check_fitted()
        self._check_columns(events)
        assert self.vocabs_ is not None and self.numeric_stats_ is not None
        if events.height == 0:
            raise SchemaError("No events to featurise: the event table is empty.")
        df = sort_by_user_time(events)
        ts_max = df.get_column("ts").max()
        if as_of is None:
            as_of = ts_max  # type: ignore[assignment]
        elif ts_max is not None and ts_max > as_of:  # type: ignore[operator]
            n_late = df.filter(pl.col("ts") > as_of).height
            raise SchemaError(
                f"{n_late} event(s) are later than as_of={as_of.isoformat()} (latest {ts_max}). "
                "Pass a later as_of, or filter the events up to the cut-off first."
            )
        cols: dict[str, Any] = {}
        for col in self.categorical_fields:
            vocab = self.vocabs_[col]
            m = pl.DataFrame(
                {"k": pl.Series(vocab, dtype=pl.String), "v": np.arange(len(vocab)) + N_SPECIAL}
            )
            s = df.get_column(col).cast(pl.String)
            ids = (
                pl.DataFrame({"k": s})
                .join(m, on="k", how="left", maintain_order="left")
                .get_column("v")
            )
            ids = pl.when(s.is_null()).then(MISSING).otherwise(ids.fill_null(OOV))
            cols[col] = pl.select(ids).to_series().to_numpy().astype(np.int64)
        uid_col = df.get_column("user_id")
        new_user = (uid_col != uid_col.shift(1)).fill_null(True).to_numpy()  # not a Python string per event
        # the previous event's type within the user: local order (search -> cart vs cart -> search)
        cols["prev_event"] = np.where(new_user, MISSING, np.roll(cols["event"], 1))
        if self.config.transitions:
            cols["transition"] = transition_ids(cols["prev_event"], cols["event"])
        cols["item"] = (
            stable_hash_bucket(df.get_column("item").cast(pl.String), self.config.item_buckets)
            .to_numpy()
            .astype(np.int64)
        )
        amount = df.get_column("amount").cast(pl.Float64).to_numpy()
        amount = np.where(np.isfinite(amount), amount, np.nan)
        la = np.log1p(np.abs(np.nan_to_num(amount, nan=0.0)))
        nb = self.config.amount_buckets
        bucket = np.clip(np.floor(la * 2.0), 0, nb - 1).astype(np.int64)  # half-log steps
        bucket = bucket + np.where(amount < 0, nb, 0) + N_SPECIAL
        cols["amount_bucket"] = np.where(np.isnan(amount), MISSING, bucket)
        scale = self.numeric_stats_["amount"][1]
        cols["amount_value"] = np.nan_to_num(np.sign(amount) * la / scale, nan=0.0).astype(
            np.float32
        )
        ts_us = df.get_column("ts").cast(pl.Int64).to_numpy()  # microseconds since epoch
        gap_s = np.zeros(len(ts_us), dtype=np.float64)
        gap_s[1:] = (ts_us[1:] - ts_us[:-1]) / 1e6
        gap_b = np.clip(np.floor(np.log2(np.maximum(gap_s, 0) + 1.0)), 0, GAP_BUCKETS - 2)
        cols["gap"] = np.where(new_user, FIRST_GAP, gap_b).astype(np.int64)
        new_session = new_user | (gap_s > SESSION_GAP_S)
        session_start = np.maximum.accumulate(np.where(new_session, np.arange(len(new_user)), 0))
        cols["session_pos"] = np.minimum(np.arange(len(new_user)) - session_start, SESSION_POS - 1) + 1
        as_of_us = int(pl.Series([as_of]).cast(pl.Datetime("us")).cast(pl.Int64)[0])
        rec_s = np.maximum(as_of_us - ts_us, 0) / 1e6
        cols["recency"] = np.clip(
            np.floor(np.log2(rec_s + 1.0)), 0, RECENCY_BUCKETS - 1
        ).astype(np.int64)
        cols["log_recency"] = (np.log1p(rec_s / 86400.0) / LOG_RECENCY_SCALE).astype(np.float32)
        ts = df.get_column("ts")
        cols["hour"] = ts.dt.hour().to_numpy().astype(np.int64) + 1
        cols["weekday"] = ts.dt.weekday().to_numpy().astype(np.int64)  # 1..7, Monday = 1
        for col in self.config.extra_numeric:
            mu, sd = self.numeric_stats_[col]
            v = df.get_column(col).cast(pl.Float64).to_numpy()
            cols[col] = standardise_extra(v, mu, sd)
        if self.item_text_ is not None:
            text = df.get_column("text") if "text" in df.columns else pl.Series([None] * len(new_user), dtype=pl.String)
            cols.update(self.text_columns(text))
        starts = np.flatnonzero(new_user)
        offsets = np.concatenate([starts, [len(new_user)]]).astype(np.int64)
        return SequenceData(uid_col.gather(starts).to_numpy().astype(object), offsets, cols, as_of)

    # ----------------------------------------------------------------- batching
    def collate(
        self, data: SequenceData, index_lists: list[np.ndarray], max_len: int
    ) -> dict[str, torch.Tensor]:
        """Pad the given event-row lists (each in time order) into a batch of the last `max_len`.

        Returns a PaddedBatch dict: per-field tensors (B, T) and `lengths` (B,).
        The first kept event of each row gets the FIRST_GAP bucket, so a cropped view looks
        like a history that starts there (the same as a live session at serving time).
        """
        lens = np.array([min(len(ix), max_len) for ix in index_lists], dtype=np.int64)
        B, T = len(index_lists), max(int(lens.max(initial=1)), 1)
        flat = np.concatenate(
            [ix[len(ix) - n :] for ix, n in zip(index_lists, lens, strict=True)]
        ).astype(np.int64) if B else np.zeros(0, dtype=np.int64)
        rows = np.repeat(np.arange(B), lens)
        cols = _ranges(np.zeros(B, dtype=np.int64), lens)
        batch: dict[str, torch.Tensor] = {}
        for name, arr in data.fields.items():
            out = np.zeros((B, T), dtype=arr.dtype)
            out[rows, cols] = arr[flat]
            if name == "gap":
                out[np.arange(B)[lens > 0], 0] = FIRST_GAP
            batch[name] = torch.from_numpy(out)
        batch["lengths"] = torch.from_numpy(lens)
        batch["context"] = torch.from_numpy(self.view_context(data, flat, lens))
        return batch

    def view_context(self, data: SequenceData, flat: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """(B, N_CONTEXT) aggregates of exactly the events each batch row holds.

        Computed from the row's own events (not the user's whole history), so two sub-sequence
        views of one user do not share them (no contrastive shortcut), while a full history at
        embedding time gets what RFM knows: how many events, how recent, how much spend, over how
        long, on how many days. `flat` holds the rows' event indices back to back, `lens` their lengths.
        """
        ctx = np.zeros((len(lens), N_CONTEXT), dtype=np.float32)
        full = np.flatnonzero(lens > 0)
        if len(full) == 0:
            return ctx
        ends = np.cumsum(lens)[full]
        starts = ends - lens[full]
        rec = np.expm1(data.fields["log_recency"][flat].astype(np.float64) * LOG_RECENCY_SCALE)  # days
        av = data.fields["amount_value"][flat].astype(np.float64)
        assert self.numeric_stats_ is not None
        spend = np.where(av > 0, np.expm1(av * self.numeric_stats_["amount"][1]), 0.0)
        day = np.floor(rec)
        new_day = np.ones(len(rec), dtype=bool)
        new_day[1:] = day[1:] != day[:-1]
        new_day[starts] = True
        recency, tenure = rec[ends - 1], np.maximum(rec[starts] - rec[ends - 1], 0.0)
        ctx[full] = np.stack([
            np.log1p(lens[full]) / 5, np.log1p(recency) / 5, np.log1p(np.add.reduceat(spend, starts)) / 8,
            np.log1p(tenure) / 6, np.log1p(np.add.reduceat(new_day.astype(np.float64), starts)) / 5,
        ], axis=1)
        return ctx

    def collate_users(
        self, data: SequenceData, rows: np.ndarray, max_len: int
    ) -> dict[str, torch.Tensor]:
        """Batch of the last `max_len` events of users at positions `rows`, plus `n_events` (B,):
        how many events each user's whole history holds, and `history_context` (B, N_CONTEXT):
        view_context over that whole history (a plain `collate` batch holds exactly its rows)."""
        rows = np.asarray(rows)
        firsts, ends = data.offsets[rows], data.offsets[rows + 1]
        starts = np.maximum(firsts, ends - max_len)
        batch = self.collate(data, [np.arange(s, e) for s, e in zip(starts, ends, strict=True)], max_len)
        batch["n_events"] = torch.from_numpy((ends - firsts).astype(np.int64))
        batch["history_context"] = torch.from_numpy(self.view_context(data, _ranges(firsts, ends), ends - firsts))
        return batch

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "format": "seqcohort.featurizer/1",
            "config": asdict(self.config),
            "vocabs": self.vocabs_,
            "numeric_stats": self.numeric_stats_,
            "item_text": None if self.item_text_ is None else self.item_text_.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Featurizer:
        if d.get("format") != "seqcohort.featurizer/1":
            raise BundleError(f"Unknown featurizer format {d.get('format')!r}; expected seqcohort.featurizer/1.")
        f = cls(FeaturizerConfig(**d["config"]))
        f.vocabs_ = {k: list(v) for k, v in d["vocabs"].items()}
        f.numeric_stats_ = {k: (float(a), float(b)) for k, (a, b) in d["numeric_stats"].items()}
        if d.get("item_text") is not None:
            f.item_text_ = ItemText.from_dict(d["item_text"])
        return f

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)


def data_fingerprint(events: pl.DataFrame) -> str:
    """Cheap, order-independent fingerprint of an event table (rows, users, time range, hash sample)."""
    n = events.height
    users = events.get_column("user_id").n_unique()
    tmin, tmax = events.get_column("ts").min(), events.get_column("ts").max()
    h = events.select(pl.col("user_id", "event").hash(0)).to_series(0).sum() if n else 0
    raw = f"{n}|{users}|{tmin}|{tmax}|{h}"
    return f"{zlib.crc32(raw.encode()):08x}-{n}r-{users}u"
