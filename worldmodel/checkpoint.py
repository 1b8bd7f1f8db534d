"""Saving and loading networks as safetensors weights plus their config as JSON (never pickle)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TypeVar

from safetensors.torch import load_file, save_file
from torch import nn

M = TypeVar("M", bound=nn.Module)


def save(module: nn.Module, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, weights)
    (directory / f"{name}.json").write_text(json.dumps(dataclasses.asdict(module.config), indent=1))
    return weights


def load(cls: type[M], config_cls, directory: Path, name: str) -> M:
    fields = json.loads((directory / f"{name}.json").read_text())
    hints = {f.name: f.type for f in dataclasses.fields(config_cls)}
    config = config_cls(**{k: tuple(v) if "tuple" in str(hints[k]) else v for k, v in fields.items()})
    module = cls(config)
    module.load_state_dict(load_file(directory / f"{name}.safetensors"))
    return module.eval()
