"""The seqcohort pipeline as a backtest producer, for `seqcohort evaluate` and bench/quality.py."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from embeddings.config import Config
from embeddings.errors import SeqcohortError
from embeddings.evaluation.backtest import Snapshot
from embeddings.evaluation.goals import Goal

log = logging.getLogger("seqcohort")


class PipelineProducer:
    """The seqcohort pipeline as a backtest producer: (pre-cut-off events, cutoff) -> Snapshot.

    Trains a behaviour-only encoder (-> "ai_behaviour_cohorts") and a goal-aware encoder with a
    propensity head (-> "goal_aware_cohorts" and calibrated propensity) on the events it is given,
    clustering each embedding space with the configured spherical k-means. The goal-aware
    embeddings carry the propensity as one coordinate, weighted by `intent_weight`.
    """

    def __init__(self, cfg: Config, goal: Goal, workdir: str | Path, *, behaviour: bool = True,
                 bce_weight: float = 0.0, intent_weight: float = 0.5, n_cutoffs: int = 4) -> None:
        self.cfg, self.goal, self.workdir = cfg, goal, Path(workdir)
        self.behaviour, self.bce_weight, self.intent_weight = behaviour, bce_weight, intent_weight
        self.n_cutoffs = n_cutoffs

    def __call__(self, events: pl.DataFrame, cutoff: datetime) -> Snapshot:
        from embeddings.model.embed import UserEncoder
        from seqcohort.pipeline import fit_clusters, fit_cohorts
        from training.propensity import PropensityHead, train_goal_aware
        from training.train import train

        snap = Snapshot(user_ids=np.zeros(0, dtype=object))
        if self.behaviour:
            res = train(self.cfg, events, self.workdir / "behaviour", as_of=cutoff)
            enc = UserEncoder(res.bundle, device=self.cfg.trainer.accelerator)
            X = enc.encode(enc.featurize(events, cutoff))
            snap.user_ids = enc.last_user_ids
            snap.embeddings["behaviour"] = X
            km = fit_clusters(self.cfg, X)
            snap.segmentations["ai_behaviour_cohorts"] = km.predict(X)
            snap.info["behaviour_k"] = int(km.k_)
            snap.info["behaviour_train_seconds"] = res.seconds
        res = train_goal_aware(self.cfg, events, self.goal, self.workdir / "goal_aware", as_of=cutoff,
                               bce_weight=self.bce_weight, intent_weight=self.intent_weight,
                               n_cutoffs=self.n_cutoffs)
        enc = UserEncoder(res.bundle, device=self.cfg.trainer.accelerator)
        Xg = enc.encode(enc.featurize(events, cutoff))
        if len(snap.user_ids) and not np.array_equal(snap.user_ids, enc.last_user_ids):
            raise SeqcohortError("behaviour and goal-aware encoders embedded different users.")
        snap.user_ids = enc.last_user_ids
        head = PropensityHead.load(self.workdir / "goal_aware")
        snap.embeddings["goal_aware"] = Xg
        km = fit_cohorts(self.cfg, Xg, intent=head.intent)
        seg = km.predict(Xg)
        snap.segmentations["goal_aware_cohorts"] = seg
        snap.info["goal_aware_k"] = int(km.k_)
        snap.propensity = head.predict(Xg)
        snap.tie_orders["goal_aware_cohorts"] = expected_rate_order(seg, snap.propensity)
        snap.info["goal_aware_train_seconds"] = res.seconds
        snap.info["propensity_head"] = head.meta.get("head")
        snap.info["propensity_calibration"] = head.meta.get("calibration")
        return snap


def expected_rate_order(segments: np.ndarray, propensity: np.ndarray) -> list[str]:
    """Segments by their expected goal rate (mean calibrated propensity of members), best first."""
    segments = np.asarray(segments).astype(str)
    names = sorted(set(segments.tolist()))
    rate = {s: float(np.mean(propensity[segments == s])) for s in names}
    return sorted(names, key=lambda s: (-rate[s], s))

