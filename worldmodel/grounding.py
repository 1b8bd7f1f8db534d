"""Grounding an operator's instruction in the words the policy was trained on.

The policy's text encoder learns its words from the simulator's captions, so a word it never saw
("cube", "onto", "hover") reaches it as <unk>. An instruction whose every word the encoder knows is
passed through unchanged. One with an unknown word is matched, by a frozen pretrained encoder
(all-MiniLM-L6-v2 from its wheel), against the instructions the robot's tasks are given in, and
the closest is what the policy reads. The match is a BERTScore: each word's contextual features at
one layer are paired with the most similar word of the other text, both ways, and the two means
combined (F1). Unlike one pooled vector per sentence, it keeps which word is which: "the red cube
onto the blue one" lands nearer "the red block on the blue block" than its mirror.

The layer (3 of 6) was chosen on a development set of paraphrases written for it
(`tests/unit/test_grounding.py`), not on `sim.phrasings`, which measures the result. So was the
threshold: an instruction whose best F1 is under `min_similarity` (0.58, between that set's lowest
right match, 0.65, and the highest of four unrelated requests, 0.52) is passed through unchanged,
with a warning: the policy then sees its <unk>s rather than a task the operator did not ask for.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from worldmodel.text_encoder import frozen_sentence_encoder, tokenize

log = logging.getLogger(__name__)

MODEL, LAYER = "all-MiniLM-L6-v2", 3


@dataclass(frozen=True)
class Grounding:
    said: str
    understood: str
    similarity: float | None = None  # None: every word known, nothing matched
    runner_up: str | None = None
    runner_up_similarity: float | None = None


class InstructionGrounder:
    def __init__(self, vocabulary: Collection[str], instructions: Sequence[str], min_similarity: float = 0.58):
        self.vocabulary = set(vocabulary)
        self.instructions = list(dict.fromkeys(instructions))
        self.min_similarity = min_similarity
        self._known: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache: dict[str, Grounding] = {}

    def _features(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length word features (B, L, D) and which rows are words (B, L)."""
        features = frozen_sentence_encoder(MODEL, LAYER)(texts, max_words=64)
        return torch.nn.functional.normalize(features, dim=-1), features.abs().sum(-1) > 0

    def similarities(self, text: str) -> torch.Tensor:
        """BERTScore F1 of `text` against each known instruction."""
        if self._known is None:
            self._known = self._features(self.instructions)
        known, known_words = self._known
        said, said_words = self._features([text])
        said = said[0, said_words[0]]  # (Ls, D)
        sims = torch.einsum("sd,kld->ksl", said, known).masked_fill(~known_words[:, None, :], -1.0)
        recall = sims.max(2).values.mean(1)  # each word said, matched in the known instruction
        best_for_known = sims.max(1).values  # (K, Lk)
        precision = (best_for_known * known_words).sum(1) / known_words.sum(1)
        return 2 * precision * recall / (precision + recall).clamp(min=1e-6)

    def __call__(self, text: str) -> Grounding:
        if len(self._cache) > 50_000:  # a long-lived agent handed ever new instructions
            self._cache.clear()
        if text not in self._cache:
            self._cache[text] = self._ground(text)
        return self._cache[text]

    def _ground(self, text: str) -> Grounding:
        words = tokenize(text)
        if words and all(w in self.vocabulary for w in words):
            return Grounding(text, text)
        if not words:
            return Grounding(text, text, 0.0)
        top = self.similarities(text).topk(min(2, len(self.instructions)))
        scores, best = top.values.tolist(), [self.instructions[i] for i in top.indices.tolist()]
        runner_up = (best[1], scores[1]) if len(best) > 1 else (None, None)
        if scores[0] < self.min_similarity:
            log.warning(
                "instruction %r is like no known one (best %r, %.2f); passed on as said", text, best[0], scores[0]
            )
            return Grounding(text, text, scores[0], *runner_up)
        log.info("instruction %r understood as %r (%.3f; next %r)", text, best[0], scores[0], runner_up[0])
        return Grounding(text, best[0], scores[0], *runner_up)
