"""LocalNamer with a tiny randomly initialised GPT-2 built offline: it talks nonsense and falls back."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from fake_llm_server import make_profile

from embeddings.errors import NamingError
from embeddings.naming import LocalNamer, StatsNamer, make_namer

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"
)


def build_tiny_lm(path: Path, n_positions: int = 4096, chat_template: str | None = None) -> Path:
    """A 1-layer GPT-2 with a word-level tokenizer trained on a few strings, saved to `path`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [
        '{"cohorts": [{"cohort_id": 1, "name": "Evening garden buyers"}]}',
        "purchase page_view search Garden",
    ]
    tok.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"])
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    if chat_template:
        fast.chat_template = chat_template
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        vocab_size=len(fast),
        n_positions=n_positions,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def profiles() -> list:
    return [
        make_profile(
            0, relative={"recency": 3.0}, recency_days=60, categories=[("Grocery", 0.6, 2.5)]
        ),
        make_profile(1, relative={"monetary": 2.5}, daypart="evening", n_exemplars=3),
    ]


def test_nonsense_generation_falls_back_per_cohort_with_reason(
    tiny_lm: Path, tmp_path: Path
) -> None:
    ps = profiles()
    namer = LocalNamer(tiny_lm, max_new_tokens=16, cache_dir=tmp_path)
    assert "USER:" in namer.prompt_text(
        [{"role": "user", "content": "hi"}]
    )  # plain prompt, no template
    names = namer.name(ps)
    stats = StatsNamer().name(ps)
    assert [n.name for n in names] == [s.name for s in stats]
    assert all(
        n.namer == "stats" and n.fallback_reason.startswith("invalid after repair") for n in names
    )
    assert list(tmp_path.iterdir()) == []  # nothing cached


def test_chat_template_is_used_when_present(tmp_path: Path) -> None:
    model_dir = build_tiny_lm(tmp_path / "chat", chat_template=CHAT_TEMPLATE)
    namer = make_namer("local", model_dir=model_dir, max_new_tokens=8)
    text = namer.prompt_text([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text.strip() == "<|system|>\nS\n<|user|>\nU\n<|assistant|>"
    names = namer.name(profiles()[:1])
    assert names[0].namer == "stats" and names[0].fallback_reason


def test_prompt_longer_than_the_context_falls_back_without_generating(tmp_path: Path) -> None:
    model_dir = build_tiny_lm(tmp_path / "short", n_positions=64)
    names = LocalNamer(model_dir, max_new_tokens=8).name(profiles())
    assert all("exceeds the model's context of 64" in n.fallback_reason for n in names)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NamingError, match="needs model_dir"):
        make_namer("local", model_dir=None)
    with pytest.raises(NamingError, match="does not exist"):
        LocalNamer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NamingError, match="Cannot load a causal LM"):
        LocalNamer(tmp_path / "empty").name(profiles())
