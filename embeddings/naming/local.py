"""`LocalNamer`: a transformers causal LM loaded from a local directory, offline."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from embeddings.errors import NamingError
from embeddings.naming.base import Namer
from embeddings.naming.generative import CompletionError, GenerativeNamer
from embeddings.naming.prompt import PromptTemplate

logger = logging.getLogger(__name__)


def _dir_fingerprint(model_dir: Path) -> str:
    """Hash of the model's config and weight file sizes: a different checkpoint, a different cache key."""
    h = hashlib.sha256()
    for f in sorted(model_dir.iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes() if f.suffix == ".json" else str(f.stat().st_size).encode())
    return h.hexdigest()[:12]


class LocalNamer(GenerativeNamer):
    """Names cohorts with a causal LM from `model_dir` (needs the `llm` extra: transformers).

    Uses the tokenizer's chat template when it has one, a plain "system / user / JSON:" prompt
    otherwise; decodes greedily (deterministic). Never touches the network: files are loaded with
    `local_files_only=True`. A prompt longer than the model's context makes those cohorts fall back.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_new_tokens: int = 256,
        cache_dir: str | Path | None = None,
        fallback: Namer | None = None,
        device: str = "cpu",
        max_cohorts_per_request: int = 4,
        template: PromptTemplate | None = None,
    ) -> None:
        if not model_dir:
            raise NamingError(
                "The local namer needs model_dir, a directory saved with save_pretrained: "
                "set naming.model_dir in the config or pass --model-dir."
            )
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise NamingError(
                f"Local naming model directory {self.model_dir} does not exist: pass a directory "
                "saved with save_pretrained (config.json, weights, tokenizer files)."
            )
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.namer_tag = f"local:{self.model_dir}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        super().__init__(
            cache_dir=cache_dir,
            cache_model=f"local:{self.model_dir.name}:{_dir_fingerprint(self.model_dir)}",
            fallback=fallback,
            max_cohorts_per_request=max_cohorts_per_request,
            concurrency=1,
            template=template,
        )

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                try:
                    from transformers import AutoModelForCausalLM, AutoTokenizer
                except ImportError as e:
                    raise NamingError(
                        "LocalNamer needs transformers: pip install 'seqcohort[llm]'."
                    ) from e
                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(
                        self.model_dir, local_files_only=True
                    )
                    model = AutoModelForCausalLM.from_pretrained(
                        self.model_dir, local_files_only=True
                    )
                except (OSError, ValueError) as e:
                    raise NamingError(f"Cannot load a causal LM from {self.model_dir}: {e}") from e
                self._model = model.to(self.device).eval()
                logger.info("loaded local naming model from %s on %s", self.model_dir, self.device)
            return self._model, self._tokenizer

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        """The text fed to the model: its chat template when it has one, a plain prompt otherwise."""
        _, tok = self._load()
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = [f"{m['role'].upper()}:\n{m['content']}" for m in messages]
        return "\n\n".join(parts) + "\n\nASSISTANT (JSON only):\n"

    def _complete(self, messages: list[dict[str, str]], n_cohorts: int) -> str:
        import torch

        model, tok = self._load()
        enc = tok(self.prompt_text(messages), return_tensors="pt", add_special_tokens=False)
        n_prompt = enc["input_ids"].shape[1]
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )
        if limit and n_prompt + self.max_new_tokens > limit:
            raise CompletionError(
                f"prompt of {n_prompt} tokens + {self.max_new_tokens} new tokens exceeds the model's "
                f"context of {limit}; lower max_cohorts_per_request or use a longer-context model"
            )
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            out = model.generate(
                **{k: v.to(self.device) for k, v in enc.items()},
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return tok.decode(out[0, n_prompt:], skip_special_tokens=True)
