"""Encoder bundle: a directory that rebuilds the encoder and featurizer exactly, without pickles.

    config.json        EncoderConfig
    model.safetensors  weights
    featurizer.json    Featurizer (vocabularies, scales)
    manifest.json      format, version hash, data fingerprint, metrics, creation time

A bundle of another format is not read: `load_bundle` says which format it found and asks for a
retrain (bundles are cheap to rebuild; readers for every earlier layout are not).

A goal-aware bundle also holds `propensity.safetensors` (the head) and `propensity.json` (goal,
calibration, intent scaling); it loads as an `embeddings.model.intent.IntentEncoder`.

A bundle whose featurizer reads item titles also holds `item_text.safetensors`: the reduced title
vectors by text hash (embeddings/features/item_text.py), so known titles are never re-encoded. The
cache only remembers a fixed function of each title (the PCA is in featurizer.json), so it is left
out of the version hash and `save_text_cache` grows it in place: the same encoder, more titles known.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from embeddings.errors import BundleError
from embeddings.features.featurizer import Featurizer
from embeddings.fsutil import atomic_dir, atomic_path, atomic_write_json
from embeddings.model.encoder import EncoderConfig, EventEncoder
from embeddings.model.intent import IntentConfig, IntentEncoder

FILES = ("config.json", "model.safetensors", "featurizer.json", "manifest.json")
# /2: EncoderConfig keeps `learned_dim` (with `dim` derived), every field written; whole-history
# frequency and propensity-head aggregates only
FORMAT = "seqcohort.bundle/2"
HEAD_FILE = "propensity.safetensors"
META_FILE = "propensity.json"
TEXT_FILE = "item_text.safetensors"  # title vectors by text hash, where the featurizer reads titles
PROPENSITY_FORMAT = "seqcohort.propensity/3"
RETRAIN = "retrain with `seqcohort run` or `seqcohort train`"


@dataclass
class Bundle:
    encoder: EventEncoder | IntentEncoder
    featurizer: Featurizer
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unknown"))

    @property
    def config(self) -> EncoderConfig:
        """The behaviour encoder's config (a goal-aware bundle's intent coordinates come after it)."""
        return self.encoder.cfg

    @property
    def dim(self) -> int:
        """Width of the embeddings the bundle's encoder returns."""
        return self.encoder.dim


def _version_hash(config: dict[str, Any], featurizer: dict[str, Any], weights: list[Path],
                  propensity: dict[str, Any] | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    h.update(json.dumps(featurizer, sort_keys=True).encode())
    for w in weights:
        h.update(w.read_bytes())
    if propensity is not None:
        h.update(json.dumps(propensity, sort_keys=True).encode())
    return h.hexdigest()[:12]


def _state(module: Any) -> dict[str, Any]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_bundle(
    path: str | Path,
    encoder: EventEncoder | IntentEncoder,
    featurizer: Featurizer,
    *,
    data_fingerprint: str = "",
    metrics: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    propensity: dict[str, Any] | None = None,
) -> Bundle:
    """Write a bundle directory atomically (a crash leaves no half-written bundle).

    An IntentEncoder needs `propensity` (the head's metadata, with "embedding" = its IntentConfig).
    """
    path = Path(path)
    base = encoder.base if isinstance(encoder, IntentEncoder) else encoder
    if isinstance(encoder, IntentEncoder) and propensity is None:
        raise BundleError("save_bundle(IntentEncoder) needs the propensity metadata.")
    config = base.cfg.to_dict()
    feat = featurizer.to_dict()
    with atomic_dir(path) as tmp:
        atomic_write_json(tmp / "config.json", config)
        atomic_write_json(tmp / "featurizer.json", feat)
        save_file(_state(base), str(tmp / "model.safetensors"))
        weights = [tmp / "model.safetensors"]
        if featurizer.item_text_ is not None:  # not in `weights`: a bigger cache is the same encoder
            save_numpy(featurizer.item_text_.cache_arrays(), str(tmp / TEXT_FILE))
        if isinstance(encoder, IntentEncoder):
            propensity = {**(propensity or {}), "format": PROPENSITY_FORMAT, "embedding": encoder.intent.to_dict()}
            save_file(_state(encoder.head), str(tmp / HEAD_FILE))
            atomic_write_json(tmp / META_FILE, propensity)
            weights.append(tmp / HEAD_FILE)
        manifest = {
            "format": FORMAT,
            "version": _version_hash(config, feat, weights, propensity),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data_fingerprint": data_fingerprint,
            "metrics": metrics or {},
            "parameters": encoder.num_parameters(),
            **(extra or {}),
            **({"propensity": propensity} if propensity is not None else {}),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return Bundle(encoder, featurizer, manifest)


def save_text_cache(path: str | Path, featurizer: Featurizer) -> bool:
    """Write `featurizer`'s title cache into bundle `path` if it knows titles the bundle's file lacks.

    The cache only grows from the file it was loaded from, so more keys means new titles. The file is
    replaced atomically; the manifest and version stay. Returns whether the file was written.
    """
    it, file = featurizer.item_text_, Path(path) / TEXT_FILE
    if it is None:
        return False
    if file.is_file():
        with safe_open(str(file), "numpy") as f:
            if f.get_slice("keys").get_shape()[0] >= len(it.cache_):
                return False
    with atomic_path(file) as tmp:
        save_numpy(it.cache_arrays(), str(tmp))
    return True


def load_bundle(path: str | Path, device: str = "cpu") -> Bundle:
    """Rebuild encoder (in eval mode) and featurizer from a bundle directory."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(
            f"Encoder bundle {path} does not exist. Train one with `seqcohort train` or "
            "`seqcohort run`, or point --bundle at a directory holding config.json and model.safetensors."
        )
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise BundleError(f"Encoder bundle {path} is incomplete: missing {missing}. Retrain or restore it.")
    manifest = _read_json(path / "manifest.json")
    check_format(path / "manifest.json", manifest.get("format"), FORMAT)
    try:
        cfg = EncoderConfig.from_dict(_read_json(path / "config.json"))
    except (TypeError, ValueError) as e:
        raise BundleError(f"{path / 'config.json'} does not describe an encoder of {FORMAT}: {e}; {RETRAIN}.") from e
    try:
        featurizer = Featurizer.from_dict(_read_json(path / "featurizer.json"))
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{path / 'featurizer.json'} is unreadable ({e!r}); {RETRAIN}.") from e
    if featurizer.item_text_ is not None:
        if not (path / TEXT_FILE).is_file():
            raise BundleError(f"Encoder bundle {path} reads item titles but lacks {TEXT_FILE}; {RETRAIN}.")
        featurizer.item_text_.load_cache(load_numpy(str(path / TEXT_FILE)), path / TEXT_FILE)
    encoder = EventEncoder(cfg)
    state = load_file(str(path / "model.safetensors"), device=device)
    missing_keys, unexpected = encoder.load_state_dict(state, strict=False)
    if missing_keys or unexpected:
        raise BundleError(
            f"Bundle {path} weights do not match its config (missing {missing_keys[:5]}, "
            f"unexpected {unexpected[:5]})."
        )
    meta = read_propensity_meta(path)
    if meta is None:
        return Bundle(encoder.to(device).eval(), featurizer, manifest)
    try:
        intent = IntentConfig(**meta["embedding"])
        head_state = load_file(str(path / HEAD_FILE), device=device)
        head = torch.nn.Linear(head_state["weight"].shape[1], 1)
        head.load_state_dict(head_state)
        wrapped = IntentEncoder(encoder, head, intent)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise BundleError(f"Bundle {path} has an unreadable propensity head ({HEAD_FILE}, {META_FILE}): {e}") from e
    return Bundle(wrapped.to(device).eval(), featurizer, manifest)


def check_format(file: Path, found: object, expected: str) -> None:
    """BundleError unless `file` declares format `expected`: what it has, what is read, the fix."""
    if found != expected:
        has = f"format {found!r}" if found is not None else "no format"
        raise BundleError(f"{file} has {has}; this version of seqcohort reads {expected!r} only (bundles of "
                          f"earlier builds are not read): {RETRAIN}.")


def _read_json(file: Path) -> dict[str, Any]:
    try:
        d = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{file} is not valid JSON ({e}); restore it or {RETRAIN}.") from e
    if not isinstance(d, dict):
        raise BundleError(f"{file} holds a {type(d).__name__}, not an object; restore it or {RETRAIN}.")
    return d


def read_propensity_meta(path: str | Path) -> dict[str, Any] | None:
    """The goal-aware head's metadata of a bundle directory, or None for a behaviour-only bundle."""
    path = Path(path)
    if not (path / META_FILE).is_file():
        return None
    if not (path / HEAD_FILE).is_file():
        raise BundleError(f"Bundle {path} has {META_FILE} but no {HEAD_FILE}; retrain it with the goal.")
    meta = _read_json(path / META_FILE)
    check_format(path / META_FILE, meta.get("format"), PROPENSITY_FORMAT)
    return meta
