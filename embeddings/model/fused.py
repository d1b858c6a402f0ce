"""EventEncoder's forward for inference on the CPU in fewer, fused ops: the same vectors within ~1e-6.

`EventEncoder.learned` reads each event field through its own embedding table and adds them one by
one: thirteen passes over a (B, T, d_model) tensor that does not fit in cache, a fifth of a CPU
batch's time. Here every per-event input (categorical ids, numeric values through their linear
layer, position, the summary token) is one weighted `embedding_bag` over a stacked table that writes
the transformer input once. The blocks' linear layers run through oneDNN with the GELU and the
residual add fused (`torch.ops.mkldnn._linear_pointwise`, plain torch where this torch build has no
oneDNN), and a batch whose users all fill every position skips the attention mask. Only the sums'
order changes (docs/decisions.md#fused-cpu-inference).

    fused = FusedEncoder(encoder)          # an eval-mode EventEncoder
    with torch.inference_mode():
        z = fused(batch)                   # (B, dim), == encoder(batch) within ~1e-6
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embeddings.model.encoder import Block, EventEncoder


def _has_onednn_linear() -> bool:
    """Whether this torch build runs `mkldnn._linear_pointwise` (CPU builds with oneDNN do)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        with torch.inference_mode():
            x, w = torch.ones(2, 3), torch.ones(4, 3)
            y = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
            return bool(torch.equal(y, x @ w.T))
    except (RuntimeError, NotImplementedError):
        return False


ONEDNN = _has_onednn_linear()
# below this many rows (events in the batch) oneDNN's setup per call costs more than it saves, e.g. on a
# live session (docs/decisions.md#fused-cpu-inference)
ONEDNN_MIN_ROWS = 1024


def linear(x: torch.Tensor, lin: torch.nn.Linear, *, gelu: bool = False, add: torch.Tensor | None = None) -> torch.Tensor:
    """`lin(x)`, then exact GELU or `+ add`, fused into one oneDNN op where torch has one."""
    if ONEDNN and x.numel() >= ONEDNN_MIN_ROWS * x.shape[-1]:
        if add is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, lin.weight, lin.bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, lin.weight, lin.bias, "gelu" if gelu else "none", [],
                                                  "none" if gelu else "")
    y = F.linear(x, lin.weight, lin.bias)
    return F.gelu(y) if gelu else y if add is None else y + add


def block(b: Block, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """`Block.forward` in eval mode: (B, T, d_model) -> (B, T, d_model)."""
    B, T, C = x.shape
    h = F.layer_norm(x, (C,), b.ln1.weight, b.ln1.bias, b.ln1.eps)
    q, k, v = linear(h, b.qkv).split(C, dim=2)
    q, k, v = (t.view(B, T, b.n_heads, C // b.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2).reshape(B, T, C)
    x = linear(y, b.proj, add=x)
    h = F.layer_norm(x, (C,), b.ln2.weight, b.ln2.bias, b.ln2.eps)
    return linear(linear(h, b.mlp[0], gelu=True), b.mlp[2], add=x)


class FusedEncoder:
    """Inference-only view of an EventEncoder; holds its weights (no copies) and one stacked input table.

    The table is a copy: built anew whenever a weight it holds has changed in place since (torch's
    version counters), so the vectors always follow the encoder's current weights.
    """

    def __init__(self, encoder: EventEncoder) -> None:
        self.encoder = encoder
        self.names = list(encoder.embeds)
        self._stamp: tuple[int, ...] = ()
        self._table = torch.empty(0)

    def _sources(self) -> list[torch.Tensor]:
        e = self.encoder
        rows = [e.embeds[n].weight for n in self.names]
        if e.numeric is not None:
            rows += [e.numeric.weight.T, e.numeric.bias[None]]  # one row per numeric field, then the bias
        return [*rows, e.pos.weight, e.summary[0]]

    def table(self) -> torch.Tensor:
        """(rows, d_model): categorical tables, numeric weight rows and bias, positions, summary token."""
        src = self._sources()
        stamp = tuple(t._version for t in src) + tuple(t.data_ptr() for t in src)
        if stamp != self._stamp:
            self._table = torch.cat([t.detach() for t in src]).contiguous()
            self._stamp = stamp
        return self._table

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The first block's input (B, 1 + T, d_model), summary token first, and `valid` (B, T).

        Row (b, t) is the weighted sum of its entries' table rows: each categorical id (weight 1),
        each numeric field's row (weight: the value), the numeric bias (1), its position (1); every
        weight 0 on padding. Row (b, 0) is the summary token plus position 0 of the table.
        """
        e, cfg = self.encoder, self.encoder.cfg
        lengths = batch["lengths"]
        B, T = batch[self.names[0]].shape
        sizes = [e.embeds[n].num_embeddings for n in self.names]
        n_num = len(cfg.numeric_fields)
        num_row = sum(sizes)
        pos_row = num_row + (n_num + 1 if n_num else 0)
        summary_row = pos_row + cfg.max_len + 1
        n_cat, width = len(self.names), len(self.names) + (n_num + 1 if n_num else 0) + 1
        arange = torch.arange(T, device=lengths.device)
        valid = arange[None, :] < lengths[:, None]  # (B, T)
        w = valid.float()
        idx = torch.zeros(B, 1 + T, width, dtype=torch.long, device=lengths.device)
        wt = torch.zeros(B, 1 + T, width, device=lengths.device)
        ev_idx, ev_wt = idx[:, 1:], wt[:, 1:]  # (B, T, width) views of the event rows
        offset = 0
        for j, (name, size) in enumerate(zip(self.names, sizes, strict=True)):
            torch.add(batch[name], offset, out=ev_idx[..., j])
            offset += size
        ev_wt[..., :n_cat] = w[..., None]
        if n_num:
            for j, name in enumerate(cfg.numeric_fields):
                ev_idx[..., n_cat + j] = num_row + j
                torch.mul(batch[name].float(), w, out=ev_wt[..., n_cat + j])
            ev_idx[..., n_cat + n_num] = num_row + n_num
            ev_wt[..., n_cat + n_num] = w
        # position from the most recent event; row 0 of the position table is the summary token's
        pos = (lengths[:, None] - 1 - arange[None, :]).clamp(0, cfg.max_len - 1) + 1
        torch.add(pos, pos_row, out=ev_idx[..., -1])
        ev_wt[..., -1] = w
        idx[:, 0, 0], idx[:, 0, 1] = summary_row, pos_row
        wt[:, 0, :2] = 1.0
        x = F.embedding_bag(idx.view(-1, width), self.table(), per_sample_weights=wt.view(-1, width), mode="sum")
        x = x.view(B, 1 + T, -1)  # (B, 1 + T, d_model)
        if e.context is not None:
            x[:, 0] += e.context(batch["context"].float())
        return x, valid

    def learned(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """`EventEncoder.learned`: (B, learned_dim) unit rows."""
        e = self.encoder
        x, valid = self.inputs(batch)
        B = x.shape[0]
        key_mask = None  # no padded key anywhere in the batch (a long user's every batch): no mask to apply
        if not bool(valid.all()):
            key_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), valid], dim=1)[:, None, None, :]
        for b in e.blocks:
            x = block(b, x, key_mask)  # type: ignore[arg-type]
        x = e.ln_f(x)
        w = valid.float()
        mean = torch.bmm(w[:, None, :], x[:, 1:]).squeeze(1) / w.sum(1, keepdim=True).clamp(min=1.0)  # (B, d_model)
        return F.normalize(e.head(torch.cat([x[:, 0], mean], dim=-1)), dim=-1)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, dim) L2-normalised embeddings, as `EventEncoder.forward` in eval mode (no gradients)."""
        with torch.inference_mode():
            return self.encoder.from_learned(self.learned(batch), batch)
