"""A small text encoder trained here: word tokens, learned positions, two transformer layers.

Order matters in the instructions ("put the red block on the blue block" is not its mirror), so
this is not a bag of words. Its vocabulary is built from the training captions; unknown words map
to <unk>. Small enough to train with the world model on CPU, and shipped inside the policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pydantic.dataclasses
import torch
from torch import nn

PAD, UNK = "<pad>", "<unk>"


@dataclass
class TextFeatures:
    """Per-word features for models that attend to words, and one pooled vector for the rest."""

    tokens: torch.Tensor  # (B, L, dim)
    pad: torch.Tensor  # (B, L) True where there is no word
    pooled: torch.Tensor  # (B, dim)

    def repeat_interleave(self, k: int) -> TextFeatures:
        return TextFeatures(*(x.repeat_interleave(k, 0) for x in (self.tokens, self.pad, self.pooled)))


@pydantic.dataclasses.dataclass
class TextEncoderConfig:
    vocab: list[str] = field(default_factory=lambda: [PAD, UNK])
    dim: int = 64
    layers: int = 2
    heads: int = 4
    max_tokens: int = 64  # detailed (upsampled) captions run to ~60 words


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def build_vocab(texts: list[str]) -> list[str]:
    return [PAD, UNK, *sorted({w for t in texts for w in tokenize(t)})]


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.index = {w: i for i, w in enumerate(config.vocab)}
        self.embed = nn.Embedding(len(config.vocab), config.dim, padding_idx=0)
        # Random, not zero: with zero positions attention plus mean pooling ignores word order.
        self.pos = nn.Parameter(torch.randn(config.max_tokens, config.dim) * 0.1)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, 2 * config.dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)

    def ids(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.config.max_tokens, dtype=torch.long)
        for row, text in enumerate(texts):
            toks = [self.index.get(w, 1) for w in tokenize(text)][: self.config.max_tokens]
            out[row, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        return out

    def forward(self, texts: list[str]) -> TextFeatures:
        ids = self.ids(texts).to(self.pos.device)
        length = max(int((ids != 0).sum(1).max()), 1)
        ids = ids[:, :length]  # no work on padding past the longest text
        pad = ids == 0
        h = self.norm(self.encoder(self.embed(ids) + self.pos[:length], src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).float()
        return TextFeatures(h, pad, (h * keep).sum(1) / keep.sum(1).clamp(min=1))
