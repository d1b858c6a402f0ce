"""Choose how much category shares weigh in the habit profile, per log, by how well users group.

Which habits define the groups differs between logs: where groups are defined by what they shop for,
category shares need more weight than the profile's default (1 against event shares 2 and "next"
rows 3); where groups share categories and differ in the order of their events, more weight on
categories blurs them; the weighting that recovers the archetypes best is the one whose cohorts have
the higher silhouette (docs/decisions.md#category-weight-chosen-per-log). So after training, the
profile is rebuilt for each candidate weight on a sample of the fitted users, clustered exactly as
the cohorts will be, and the candidate with the best silhouette wins when it beats the default by
PROFILE_MARGIN; where no candidate reaches `cluster.STRUCTURE_MIN` (a log without groups) the
default stays.

`fit_profile` fits the profile's PCA for an encoder's config (at build time, and again when the
chosen weight is not the one the encoder was built with).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from embeddings.cohorts.cluster import STRUCTURE_MIN, SphericalKMeans
from embeddings.config import Config
from embeddings.features.featurizer import Featurizer, SequenceData
from embeddings.features.habits import block_width, fit_habit_pca, habit_matrix
from embeddings.model.encoder import EventEncoder, join_profile
from training.steps import Stepped

log = logging.getLogger(__name__)

CATEGORY_WEIGHTS = (1.0, 2.0, 3.0)  # the first is the default
PROFILE_MARGIN = 0.01  # silhouette a candidate must gain over the default to replace it
SELECT_USERS = 5000  # fitted users the candidates are compared on (a seeded sample beyond that)
PROFILE_FIT_USERS = 20_000  # users the habit profile's PCA is fitted on (a seeded sample beyond that)


def fit_profile(
    encoder: EventEncoder, featurizer: Featurizer, data: SequenceData | None, *, seed: int = 0,
    max_users: int = PROFILE_FIT_USERS, batch_size: int = 1024,
) -> EventEncoder:
    """The encoder with its habit profile's PCA (buffers) fitted on up to `max_users` users' last events.

    Without users (or without a profile) the encoder comes back as it is; it is never modified.
    """
    c = encoder.cfg
    if data is None or len(data) == 0 or not c.n_profile:
        return encoder
    rows = np.arange(len(data))
    if len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    raw, weight, active = habit_matrix(featurizer, data, rows, c.profile_fields, c.cardinalities, c.max_len, batch_size)
    active_t = torch.from_numpy(active)
    mean, basis = fit_habit_pca(raw, weight, c.n_profile)
    profile_mean, profile_basis = torch.zeros_like(encoder.profile_mean), torch.zeros_like(encoder.profile_basis)
    profile_mean[active_t] = torch.from_numpy(mean).to(profile_mean.device)
    profile_basis[active_t] = torch.from_numpy(basis).to(profile_basis.device)
    return encoder.rebuilt(c, profile_mean=profile_mean, profile_basis=profile_basis)


def category_step(encoder: EventEncoder, featurizer: Featurizer, data: SequenceData, cfg: Config) -> Stepped:
    """Post-fit step: choose the category weight (`choose_category_weight`); when it is not the one
    the encoder was built with, the encoder rebuilt with it and its profile's PCA refitted."""
    weight = choose_category_weight(encoder, featurizer, data, cfg)
    if weight is None:
        return Stepped(encoder)
    if weight != encoder.cfg.profile_fields["category"]:
        fields = {**encoder.cfg.profile_fields, "category": weight}
        encoder = fit_profile(encoder.rebuilt(replace(encoder.cfg, profile_fields=fields)), featurizer, data,
                              seed=cfg.trainer.seed)
    return Stepped(encoder, {"profile_category_weight": weight})


def choose_category_weight(encoder: EventEncoder, featurizer: Featurizer, data: SequenceData,
                           cfg: Config, batch_size: int = 1024) -> float | None:
    """The category weight (one of CATEGORY_WEIGHTS) whose profile groups the fitted users best.

    Returns None when the profile has no category block, the config pins the weight (the encoder
    was built with it), or too few users have enough events to cluster. `encoder` is not changed:
    `category_step` builds the encoder for the weight.
    """
    c = encoder.cfg
    pinned = cfg.model.profile_category
    if not c.n_profile or "category" not in c.profile_fields or len(data) == 0:
        return None
    if pinned != "auto":  # build_encoder used it
        return None
    rows = np.flatnonzero(data.lengths >= cfg.cluster.min_events_to_fit)
    if len(rows) < max(4 * cfg.cluster.micro_clusters, 2 * cfg.cluster.k_max):
        return None
    if len(rows) > SELECT_USERS:
        rows = np.sort(np.random.default_rng(cfg.trainer.seed).choice(rows, SELECT_USERS, replace=False))
    raw, weight, active = habit_matrix(featurizer, data, rows, c.profile_fields, c.cardinalities, c.max_len, batch_size)
    behaviour = _behaviour(encoder, featurizer, data, rows, batch_size)
    start = 0
    for name in c.profile_fields:  # the category block's columns in the raw profile
        if name == "category":
            break
        start += block_width(name, c.cardinalities)
    cat = (active >= start) & (active < start + block_width("category", c.cardinalities))
    base = c.profile_fields["category"]
    scores: dict[float, float] = {}
    for w in CATEGORY_WEIGHTS:
        r = raw.copy()
        r[:, cat] *= np.sqrt(w / base)  # block scale sqrt(w / total); the total washes out below
        X = _embedding(behaviour, r, weight, c.n_profile, c.profile)
        # only the best silhouette over k is read, so no splitting afterwards
        km = SphericalKMeans.from_config(cfg.cluster, k=None, split_bimodal=False).fit(X)
        scores[w] = max(km.scores_.values(), default=-1.0)
    default = CATEGORY_WEIGHTS[0]
    best = max(scores, key=lambda w: scores[w])
    chosen = best if scores[best] >= STRUCTURE_MIN and scores[best] >= scores[default] + PROFILE_MARGIN else default
    log.info("habit profile: category weight %g (silhouette by weight: %s; %d users)", chosen,
             ", ".join(f"{w:g}: {s:.3f}" for w, s in scores.items()), len(rows))
    return chosen


def _behaviour(encoder: EventEncoder, featurizer: Featurizer, data: SequenceData, rows: np.ndarray,
               batch_size: int) -> torch.Tensor:
    """(n, D) unit [learned ; state] part of the users' embeddings: what `join_profile` joins to."""
    c = encoder.cfg
    device = next(encoder.parameters()).device
    was = encoder.training
    encoder.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            batch = featurizer.collate_users(data, rows[s : s + batch_size], c.max_len)
            z = encoder({k: v.to(device) for k, v in batch.items()}).float()
            out.append(F.normalize(z[:, : c.dim - c.n_profile], dim=-1).cpu())  # sqrt(1 - p^2) * unit part
    encoder.train(was)
    return torch.cat(out)


def _embedding(behaviour: torch.Tensor, raw: np.ndarray, weight: np.ndarray, k: int, p: float) -> np.ndarray:
    """What EventEncoder.forward returns, with the profile's PCA fitted on these users."""
    mean, basis = fit_habit_pca(raw, weight, k)
    q = torch.from_numpy((weight * (raw - mean)) @ basis).float()
    return join_profile(behaviour, q, p).numpy()
