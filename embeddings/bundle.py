"""Encoder bundle: a directory that rebuilds the encoder and featurizer exactly, without pickles.

    config.json        EncoderConfig
    model.safetensors  weights
    featurizer.json    Featurizer (vocabularies, scales)
    manifest.json      version hash, data fingerprint, metrics, creation time
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from embeddings.encoder import EncoderConfig, EventEncoder
from embeddings.errors import BundleError
from embeddings.features import Featurizer
from embeddings.fsutil import atomic_dir, atomic_write_json

FILES = ("config.json", "model.safetensors", "featurizer.json", "manifest.json")
FORMAT = "seqcohort.bundle/1"


@dataclass
class Bundle:
    encoder: EventEncoder
    featurizer: Featurizer
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unknown"))

    @property
    def config(self) -> EncoderConfig:
        return self.encoder.cfg


def _version_hash(config: dict[str, Any], featurizer: dict[str, Any], weights: Path) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    h.update(json.dumps(featurizer, sort_keys=True).encode())
    h.update(weights.read_bytes())
    return h.hexdigest()[:12]


def save_bundle(
    path: str | Path,
    encoder: EventEncoder,
    featurizer: Featurizer,
    *,
    data_fingerprint: str = "",
    metrics: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """Write a bundle directory atomically (a crash leaves no half-written bundle)."""
    path = Path(path)
    config = encoder.cfg.to_dict()
    feat = featurizer.to_dict()
    with atomic_dir(path) as tmp:
        atomic_write_json(tmp / "config.json", config)
        atomic_write_json(tmp / "featurizer.json", feat)
        state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        manifest = {
            "format": FORMAT,
            "version": _version_hash(config, feat, tmp / "model.safetensors"),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data_fingerprint": data_fingerprint,
            "metrics": metrics or {},
            "parameters": encoder.num_parameters(),
            **(extra or {}),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return Bundle(encoder, featurizer, manifest)


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
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        cfg = EncoderConfig(**json.loads((path / "config.json").read_text()))
        featurizer = Featurizer.from_dict(json.loads((path / "featurizer.json").read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise BundleError(f"Encoder bundle {path} has an unreadable JSON file: {e}") from e
    if manifest.get("format") != FORMAT:
        raise BundleError(f"Bundle {path} has format {manifest.get('format')!r}; this version reads {FORMAT}.")
    encoder = EventEncoder(cfg)
    state = load_file(str(path / "model.safetensors"), device=device)
    missing_keys, unexpected = encoder.load_state_dict(state, strict=False)
    if missing_keys or unexpected:
        raise BundleError(
            f"Bundle {path} weights do not match its config (missing {missing_keys[:5]}, "
            f"unexpected {unexpected[:5]})."
        )
    encoder.to(device).eval()
    return Bundle(encoder, featurizer, manifest)
