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
    and scores the cohorts `CohortModel` fits on each, exactly as `seqcohort run` (with and without
    `--goal`) would publish them at the cut-off. The goal-aware embeddings carry the propensity as
    one coordinate, weighted by `intent_weight`.
    """

    def __init__(self, cfg: Config, goal: Goal, workdir: str | Path, *, behaviour: bool = True,
                 bce_weight: float = 0.0, intent_weight: float = 0.5, n_cutoffs: int = 4) -> None:
        self.cfg, self.goal, self.workdir = cfg, goal, Path(workdir)
        self.behaviour, self.bce_weight, self.intent_weight = behaviour, bce_weight, intent_weight
        self.n_cutoffs = n_cutoffs

    def __call__(self, events: pl.DataFrame, cutoff: datetime) -> Snapshot:
        from embeddings.cohorts.model import CohortModel
        from embeddings.model.embed import UserEncoder
        from embeddings.model.propensity import PropensityHead
        from embeddings.naming import make_namer
        from training.propensity import train_goal_aware
        from training.train import TrainResult, train

        def cohorts(trained: TrainResult) -> CohortModel:
            """The cohorts `seqcohort run` would publish at the cut-off (names play no part in the scores)."""
            enc = UserEncoder(trained.bundle, self.cfg.trainer.accelerator, trained.bundle_dir)
            return CohortModel(self.cfg, namer=make_namer("stats")).fit(events, enc, as_of=cutoff)

        snap = Snapshot(user_ids=np.zeros(0, dtype=object))
        if self.behaviour:
            res = train(self.cfg, events, self.workdir / "behaviour", as_of=cutoff)
            model = cohorts(res)
            snap.user_ids = model.user_ids_
            snap.embeddings["behaviour"] = model.embeddings_
            snap.segmentations["ai_behaviour_cohorts"] = model.labels_
            snap.info["behaviour_k"] = len(model.cohort_table())
            snap.info["behaviour_train_seconds"] = res.seconds
        res = train_goal_aware(self.cfg, events, self.goal, self.workdir / "goal_aware", as_of=cutoff,
                               bce_weight=self.bce_weight, intent_weight=self.intent_weight,
                               n_cutoffs=self.n_cutoffs)
        model = cohorts(res)
        if len(snap.user_ids) and not np.array_equal(snap.user_ids, model.user_ids_):
            raise SeqcohortError("behaviour and goal-aware encoders embedded different users.")
        snap.user_ids = model.user_ids_
        head = PropensityHead.load(self.workdir / "goal_aware")
        snap.embeddings["goal_aware"] = model.embeddings_
        seg = model.labels_
        snap.segmentations["goal_aware_cohorts"] = seg
        snap.info["goal_aware_k"] = len(model.cohort_table())
        snap.propensity = head.predict(model.embeddings_)
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

