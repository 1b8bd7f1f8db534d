"""Caption upsampling: a short caption plus what is in the scene becomes a detailed one.

Following the 1X world model recipe, training captions are expanded into detailed descriptions
(objects, colours, positions, motion) so the video model learns to ground words in pixels. The
default captioner is deterministic templates over the simulator's scene state; a VLM that looks
at the frames can take its place by implementing `Captioner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ObjectTrack:
    colour: str
    start: tuple[float, float]  # workspace units, x right, y down
    end: tuple[float, float]
    shape: str = "block"


@dataclass(frozen=True)
class SceneDescription:
    objects: list[ObjectTrack]
    actor: str | None = None  # "robot gripper", "human hand", or None for no visible actor
    notes: list[str] = field(default_factory=list)  # e.g. lighting or camera changes


class Captioner(Protocol):
    def upsample(self, caption: str, scene: SceneDescription, frames: np.ndarray | None = None) -> str: ...


def place(x: float, y: float) -> str:
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}".replace("middle ", "")


def motion(start: tuple[float, float], end: tuple[float, float], still: float = 0.05) -> str | None:
    dx, dy = end[0] - start[0], end[1] - start[1]
    if max(abs(dx), abs(dy)) < still:
        return None
    parts = []
    if abs(dx) >= still:
        parts.append("right" if dx > 0 else "left")
    if abs(dy) >= still:
        parts.append("down" if dy > 0 else "up")
    return " and ".join(parts)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class TemplateCaptioner:
    """Deterministic: the same caption and scene always give the same detailed caption."""

    def upsample(self, caption: str, scene: SceneDescription, frames: np.ndarray | None = None) -> str:
        seen = ", ".join(f"{_article(o.colour)} {o.colour} {o.shape} at the {place(*o.start)}" for o in scene.objects)
        sentences = [caption.rstrip(".").capitalize() + ".", f"A top-down view of a wooden table with {seen}."]
        if scene.actor:
            sentences.append(f"A {scene.actor} works in the scene.")
        for o in scene.objects:
            moved = motion(o.start, o.end)
            if moved:
                sentences.append(f"The {o.colour} {o.shape} moves {moved}, ending at the {place(*o.end)}.")
        sentences.extend(n.rstrip(".").capitalize() + "." for n in scene.notes)
        return " ".join(sentences)
