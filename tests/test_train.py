from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from embeddings.config import TrainerConfig
from embeddings.features.featurizer import LOG_RECENCY_SCALE, Featurizer
from embeddings.model.embed import UserEncoder
from training.datamodule import ViewCollator, bucketed_batch, shuffled_copies
from training.losses import multiview_infonce, view_retrieval_accuracy
from training.sampling import (
    TIME_FIELDS,
    coles_view,
    sample_views,
    session_ids,
    shuffle_within_sessions,
    split_views,
    suffix_view,
)
from training.train import train


def test_infonce_prefers_aligned_views():
    torch.manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    aligned = base.repeat_interleave(2, dim=0)
    random = torch.nn.functional.normalize(torch.randn(16, 16), dim=1)
    assert multiview_infonce(aligned, 2, 0.1) < multiview_infonce(random, 2, 0.1)
    assert view_retrieval_accuracy(aligned, 2) == 1.0


def test_views_stay_inside_the_user_and_in_order():
    rng = np.random.default_rng(0)
    for fn in (lambda: suffix_view(10, 60, 32, 0.2, rng), lambda: coles_view(10, 60, 32, 0.2, rng)):
        for _ in range(50):
            v = fn()
            assert len(v) >= 1 and v.min() >= 10 and v.max() < 60 and len(v) <= 32
            assert np.all(np.diff(v) > 0)
    a, b = split_views(0, 40, 2, 64, rng)
    assert not set(a) & set(b)
    offsets = np.array([0, 1, 5])
    views = sample_views(offsets, np.array([0, 1]), 2, 8, "coles", 0.1, rng)
    assert len(views) == 4 and views[0].tolist() == [0] and views[1].tolist() == [0]


def test_tiny_lightning_run_learns_and_is_seeded(tmp_path, synth_small, tiny_cfg):
    tiny_cfg.trainer.max_steps = 40
    ev = synth_small.events
    r1 = train(tiny_cfg, ev, tmp_path / "a")
    r2 = train(tiny_cfg, ev, tmp_path / "b")
    assert r1.metrics["steps"] == 40
    assert r1.bundle.version == r2.bundle.version, "same seed, same data -> same weights"
    # a trained encoder tells views of the same user apart from others far above chance
    assert r1.metrics["val/view_acc"] > 0.3
    X = UserEncoder(r1.bundle).encode(ev).vectors
    # + recency, frequency, monetary value and visits, then the habit profile
    assert X.shape == (ev["user_id"].n_unique(), tiny_cfg.model.dim + 4 + tiny_cfg.model.profile_dim)
    assert r1.bundle.dim == X.shape[1] and r1.bundle.config.learned_dim == tiny_cfg.model.dim
    assert np.isfinite(X).all()
    assert (tmp_path / "a" / "manifest.json").is_file()


def test_shuffle_within_sessions_moves_events_only_inside_sessions():
    rng = np.random.default_rng(0)
    session_pos = np.array([1, 2, 3, 4, 1, 2, 1, 1, 2, 3])  # sessions: 0-3, 4-5, 6, 7-9
    session, opener = session_ids(session_pos), session_pos == 1
    view = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])  # starts inside the first session
    seen = set()
    for _ in range(200):
        p = shuffle_within_sessions(view, session, opener, rng)
        assert p is not None and sorted(p) == list(range(len(view)))
        assert not np.array_equal(p, np.arange(len(view))), "a copy always differs"
        np.testing.assert_array_equal(session[view[p]], session[view])  # nothing leaves its session
        np.testing.assert_array_equal(p[opener[view]], np.flatnonzero(opener[view]))  # openers stay
        seen.add(tuple(p))
    assert len(seen) > 5  # the slot before the second session and the last session both move
    # reversed: each session's movable events in the opposite order, openers in place
    p = shuffle_within_sessions(view, session, opener, rng, reverse=True)
    assert p.tolist() == [2, 1, 0, 3, 4, 5, 6, 8, 7]
    # only openers and one-event sessions: nothing to reorder
    assert shuffle_within_sessions(np.array([4, 5, 6, 7]), session, opener, rng) is None
    assert shuffle_within_sessions(np.array([3, 4, 5]), session, opener, rng) is None


def test_shuffled_copy_is_what_the_featurizer_makes_of_the_reordered_events(synth_small):
    """A copy's fields equal featurising the same events reordered inside sessions, same times."""
    ev = synth_small.events.filter(pl.col("user_id").is_in(synth_small.events["user_id"].unique().sort()[:40]))
    f = Featurizer().fit(ev)
    data = f.transform(ev, as_of=synth_small.as_of)
    data.fields["row"] = np.arange(len(data.fields["event"]), dtype=np.float32)  # tracks each event
    pos = data.fields["session_pos"]
    views = [np.arange(s, e) for s, e in zip(data.offsets[:-1], data.offsets[1:], strict=True)]
    batch = bucketed_batch(f, data, views, 400, 3)
    copies = shuffled_copies(batch, views, session_ids(pos), pos == 1, np.random.default_rng(1))
    assert len(copies["view"]) >= 20
    order_changed = 0
    offset = 0
    for b in copies["buckets"]:
        for r in range(len(b["lengths"])):
            u = int(copies["view"][offset + r])
            n = int(b["lengths"][r])
            src = b["row"][r, :n].numpy().astype(np.int64)  # event row now in each slot
            own = views[u]
            assert sorted(src) == own.tolist()
            user = data.user_ids[u]
            orig = ev.filter(pl.col("user_id") == user).sort("ts")
            moved = orig.select(pl.exclude("ts")).with_row_index("i")
            reordered = (moved[src - own[0]].drop("i")
                         .with_columns(orig["ts"]).select(orig.columns))
            expect = f.transform(reordered, as_of=synth_small.as_of)
            for k, arr in expect.fields.items():
                np.testing.assert_array_equal(b[k][r, :n].numpy(), arr, err_msg=f"field {k}")
            order_changed += not np.array_equal(src, own)
        offset += len(b["lengths"])
    assert order_changed == len(copies["view"])
    assert TIME_FIELDS <= set(data.fields)


def test_collator_adds_copies_only_when_the_term_is_on(synth_small):
    f = Featurizer().fit(synth_small.events)
    data = f.transform(synth_small.events, as_of=synth_small.as_of)
    off = ViewCollator(data, f, TrainerConfig(order_weight=0.0), 64, seed=0)([0, 1, 2, 3, 4, 5, 6, 7])
    on = ViewCollator(data, f, TrainerConfig(order_weight=1.0), 64, seed=0)([0, 1, 2, 3, 4, 5, 6, 7])
    assert "shuffled" not in off
    for a, b in zip(off["buckets"], on["buckets"], strict=True):  # the views themselves are unchanged
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    copies = on["shuffled"]
    assert len(copies["view"]) > 0 and len(copies["view"]) == sum(len(b["lengths"]) for b in copies["buckets"])


def test_dataloader_workers_draw_their_own_views(synth_small):
    """trainer.num_workers > 0: each worker starts as a copy of the collator, so without their own
    random streams two workers collating the same users would return identical views."""
    from torch.utils.data import DataLoader

    f = Featurizer().fit(synth_small.events)
    data = f.transform(synth_small.events, as_of=synth_small.as_of)
    col = ViewCollator(data, f, TrainerConfig(order_weight=1.0), 64, seed=0)
    same = list(range(16)) * 2  # batch 0 goes to worker 0, batch 1 (the same users) to worker 1
    b0, b1 = DataLoader(same, batch_size=16, shuffle=False, num_workers=2, collate_fn=col)
    flat = [torch.cat([b["event"].flatten() for b in x["buckets"]]) for x in (b0, b1)]
    assert flat[0].shape != flat[1].shape or not torch.equal(flat[0], flat[1])
    main = ViewCollator(data, f, TrainerConfig(order_weight=1.0), 64, seed=0)(list(range(16)))
    ref = ViewCollator(data, f, TrainerConfig(order_weight=1.0), 64, seed=0)(list(range(16)))
    for a, b in zip(main["buckets"], ref["buckets"], strict=True):  # the main process stays seeded
        torch.testing.assert_close(a["event"], b["event"])


def test_shuffled_copies_as_negatives_penalise_a_copy_near_its_view():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1).repeat_interleave(2, dim=0)
    z = torch.nn.functional.normalize(z + 0.1 * torch.randn_like(z), dim=1)  # 8 users x 2 views
    plain = multiview_infonce(z, 2, 0.5)
    near = multiview_infonce(z, 2, 0.5, z[::2], 16.0)  # copies equal to their views: order unseen
    far = multiview_infonce(z, 2, 0.5, -z[::2], 16.0)
    assert plain < far < near
    # weight w: one copy counts as w ordinary negatives
    w2 = multiview_infonce(z, 2, 0.5, torch.cat([z[:1], z[:1]]), 1.0)
    torch.testing.assert_close(w2, multiview_infonce(z, 2, 0.5, z[:1], 2.0))
    torch.testing.assert_close(multiview_infonce(z, 2, 0.5, z[:0], 16.0), plain)


def test_tiny_run_with_order_negatives(tmp_path, synth_small, tiny_cfg):
    tiny_cfg.trainer.max_steps = 40
    tiny_cfg.trainer.order_weight = 16.0
    r = train(tiny_cfg, synth_small.events, tmp_path / "a")
    assert r.metrics["steps"] == 40
    assert 0.0 < r.metrics["val/order_sim"] <= 1.0 and np.isfinite(r.metrics["val/loss"])
    assert r.metrics["val/view_acc"] > 0.3  # the extra negatives do not stop the contrastive task


def test_contrastive_training_sees_only_the_learned_part(synth_small, tiny_cfg):
    """Views of one user differ in recency and length by design: InfoNCE must not see those."""
    from training.module import ContrastiveModule
    from training.train import build_encoder, fit_featurizer, state_stats

    f = fit_featurizer(tiny_cfg, synth_small.events)
    data = f.transform(synth_small.events, as_of=synth_small.as_of)
    enc = build_encoder(tiny_cfg, f, data)
    last = data.fields["log_recency"][data.offsets[1:] - 1]
    held = np.log1p(np.diff(data.offsets))  # the whole history, beyond max_len
    stats = state_stats(data, f)
    assert (stats["recency_mean"], stats["recency_std"]) == pytest.approx((last.mean(), last.std()), rel=1e-5)
    assert (stats["frequency_mean"], stats["frequency_std"]) == pytest.approx((held.mean(), held.std()), rel=1e-5)
    assert enc.cfg.n_state == 4
    # the default recency shape: square root of the days before as_of, clipped at 3 std in the row
    days = np.sqrt(np.expm1(last.astype(np.float64) * LOG_RECENCY_SCALE))
    sq = state_stats(data, f, "sqrt")
    assert (sq["recency_mean"], sq["recency_std"]) == pytest.approx((days.mean(), days.std()), rel=1e-4)
    assert (enc.cfg.recency_shape, enc.cfg.recency_clip) == ("sqrt", 3.0)
    assert enc.cfg.recency_mean == pytest.approx(sq["recency_mean"])
    # visits: log1p of the days (counted back from as_of) with events over the whole history
    ev = synth_small.events.with_columns(
        d=((pl.lit(synth_small.as_of) - pl.col("ts")).dt.total_microseconds() / 86_400e6).floor())
    n_days = ev.group_by("user_id").agg(pl.col("d").n_unique()).sort("user_id")["d"].to_numpy()
    assert data.user_ids.tolist() == sorted(data.user_ids.tolist())
    v = np.log1p(n_days) / 5
    assert (sq["visits_mean"], sq["visits_std"]) == pytest.approx((v.mean(), v.std()), rel=1e-4)
    # monetary: log1p of each user's whole-history spend (positive amounts), as view_context reads it
    spend = pl.DataFrame({"u": np.repeat(np.arange(len(data)), np.diff(data.offsets)),
                          "a": np.where(data.fields["amount_value"] > 0, np.expm1(
                              data.fields["amount_value"].astype(np.float64) * f.numeric_stats_["amount"][1]), 0.0)}
                         ).group_by("u").agg(pl.col("a").sum()).sort("u")["a"].to_numpy()
    m = np.log1p(spend) / 8
    assert (stats["monetary_mean"], stats["monetary_std"]) == pytest.approx((m.mean(), m.std()), rel=1e-4)
    assert state_stats(data)["recency_mean"] == stats["recency_mean"] and "monetary_mean" not in state_stats(data)
    batch = ViewCollator(data, f, tiny_cfg.trainer, 32, seed=0)(list(range(8)))
    z = ContrastiveModule(enc, views=tiny_cfg.trainer.views)(batch)
    assert z.shape == (16, tiny_cfg.model.dim)
    enc.eval()
    full = enc(batch["buckets"][0])
    n_fixed = 4 + tiny_cfg.model.profile_dim  # recency, frequency, monetary, visits, then the habit profile
    assert full.shape[1] == tiny_cfg.model.dim + n_fixed == enc.dim and enc.cfg.n_fixed == n_fixed
    learned = full[:, :-n_fixed]
    torch.testing.assert_close(learned / learned.norm(dim=1, keepdim=True), enc.learned(batch["buckets"][0]))
    # the profile is the direction of the fitted PCA of the habit shares, with the same length in every row
    p = tiny_cfg.model.profile
    profile = full[:, -tiny_cfg.model.profile_dim:]
    torch.testing.assert_close(profile.norm(dim=1), torch.full((len(full),), p))
    q = enc.habits(batch["buckets"][0])
    torch.testing.assert_close(profile, p * q / q.norm(dim=1, keepdim=True))
    torch.testing.assert_close(full[:, :-tiny_cfg.model.profile_dim].norm(dim=1), torch.full((len(full),), (1 - p * p) ** 0.5))


def test_post_fit_steps_run_by_name_and_build_new_encoders(synth_small, tiny_cfg, caplog):
    """Denoise, then the category weight: each step hands on a new encoder built from a new config;
    the encoder it was given keeps its config and weights."""
    import logging

    from training.core import POST_FIT, post_fit
    from training.train import build_encoder, fit_featurizer

    assert [s.name for s in POST_FIT] == ["denoise", "category weight"]
    f = fit_featurizer(tiny_cfg, synth_small.events)
    data = f.transform(synth_small.events, as_of=synth_small.as_of)
    enc = build_encoder(tiny_cfg, f, data).eval()
    cfg_before, state_before = enc.cfg, {k: v.clone() for k, v in enc.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="training.steps"):
        done = post_fit(enc, f, data, tiny_cfg)
    assert "post-fit step 'denoise'" in caplog.text and "post-fit step 'category weight'" in caplog.text
    assert enc.cfg is cfg_before and enc.cfg.learned_rank == 0 and enc.cfg.profile_fields["category"] == 1.0
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, state_before[k])
    assert done.encoder is not enc
    assert done.encoder.cfg.learned_rank == done.metrics["learned_rank"] == done.extra["denoise"]["learned_rank"] > 0
    weight = done.metrics["profile_category_weight"]
    assert done.encoder.cfg.profile_fields["category"] == weight
    assert done.encoder.cfg.learned_dim == enc.cfg.learned_dim and done.encoder.dim == enc.dim
    skipped = post_fit(enc, f, data, tiny_cfg, skip={"category weight"})
    assert "profile_category_weight" not in skipped.metrics and skipped.encoder.cfg.profile_fields == enc.cfg.profile_fields
    with pytest.raises(ValueError, match="no post-fit steps"):
        post_fit(enc, f, data, tiny_cfg, skip={"profile"})


def test_progress_bar_counts_steps_of_a_step_bound_run(capsys):
    """A run bounded by `max_steps` (max_epochs=-1) shows steps out of max_steps, titled "Epoch N"."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from training.module import StepBoundBar, progress_callbacks, quiet_fit

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            loss = self.w(batch[0]).pow(2).mean()
            self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    assert progress_callbacks(False) == []
    bar = progress_callbacks(True)[0]
    assert isinstance(bar, StepBoundBar)
    loader = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)  # 2 steps an epoch
    trainer = L.Trainer(accelerator="cpu", max_steps=5, max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[bar])
    with quiet_fit():
        trainer.fit(Tiny(), train_dataloaders=loader)
    assert trainer.global_step == 5
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (5, 5)
    out = capsys.readouterr().out
    assert "Epoch 2: 100%" in out and "5/5" in out and "loss=" in out
    assert "/-" not in out  # Lightning's rich bar read "Epoch 2/-2" here

    # bounded by epochs, the bar is Lightning's own: batches of each epoch
    bar = StepBoundBar()
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[bar])
    with quiet_fit():
        trainer.fit(Tiny(), train_dataloaders=loader)
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (2, 2)


def test_monetary_coordinate_reads_the_whole_history_spend(synth_small, tiny_cfg):
    """Embedding reads total spend over all of a user's events, not only the `max_len` held."""
    from embeddings.features.featurizer import CONTEXT_SPEND
    from training.train import build_encoder, fit_featurizer

    f = fit_featurizer(tiny_cfg, synth_small.events)
    data = f.transform(synth_small.events, as_of=synth_small.as_of)
    enc = build_encoder(tiny_cfg, f, data).eval()
    batch = f.collate_users(data, np.arange(200), max_len=4)  # most histories hold far more
    with torch.no_grad():
        col = enc(batch)[:, tiny_cfg.model.dim + 2].numpy()  # after recency and frequency
    mean = enc.cfg.monetary_mean
    whole = batch["history_context"][:, CONTEXT_SPEND].numpy() - mean
    held = batch["context"][:, CONTEXT_SPEND].numpy() - mean
    assert np.array_equal(np.sign(col), np.sign(whole))
    assert (np.sign(col) != np.sign(held)).any()  # what a held-events-only read would get wrong


def test_describe_lengths_says_how_many_histories_pass_max_len():
    from training.train import describe_lengths

    assert "every history fits model.max_len=8" in describe_lengths(np.array([1, 3, 8]), 8)
    line = describe_lengths(np.array([1, 3, 9, 200]), 8)
    assert "median 6, max 200" in line
    assert "2 users (50%) have more than model.max_len=8" in line
    assert describe_lengths(np.array([], dtype=np.int64), 8) == "no users"


def test_quiet_fit_silences_lightnings_noise_but_not_real_warnings():
    import warnings

    from training.module import quiet_fit

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_fit():
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
            warnings.warn("The 'train_dataloader' does not have many workers which may be a bottleneck.",
                          UserWarning, stacklevel=1)
            warnings.warn("loss is NaN", RuntimeWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["loss is NaN"]


def test_training_reads_a_sample_of_users_when_the_log_is_larger_than_max_users(tiny_events, tiny_cfg, tmp_path) -> None:
    """trainer.max_users: whole users drawn, the same draw for any row order, the whole log's as_of kept."""
    from training.sampling import sample_users
    from training.train import train

    users = tiny_events["user_id"].n_unique()
    part = sample_users(tiny_events, 30, seed=0)
    assert part["user_id"].n_unique() == 30
    for u, n in part.group_by("user_id").len().iter_rows():
        assert n == tiny_events.filter(pl.col("user_id") == u).height  # every event of a drawn user
    shuffled = sample_users(tiny_events.sample(fraction=1.0, shuffle=True, seed=4), 30, seed=0)
    assert set(shuffled["user_id"]) == set(part["user_id"])
    assert sample_users(tiny_events, None).height == tiny_events.height == sample_users(tiny_events, users).height
    cfg = tiny_cfg.model_copy(update={"trainer": tiny_cfg.trainer.model_copy(update={"max_users": 30, "max_steps": 5})})
    res = train(cfg, tiny_events, tmp_path / "b")
    assert res.bundle.manifest["n_users"] == 30
