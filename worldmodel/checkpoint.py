"""Saving and loading networks as safetensors weights plus their config as JSON, and training
checkpoints as safetensors with their progress in its metadata (never pickle)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TypeVar

from safetensors import safe_open
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
    config = config_cls(**json.loads((directory / f"{name}.json").read_text()))  # validated; JSON lists become tuples
    module = cls(config)
    module.load_state_dict(load_file(directory / f"{name}.safetensors"))
    return module.eval()


def save_state(path: Path, modules: dict[str, nn.Module], progress: dict) -> None:
    """A training checkpoint: every module's weights and the run's progress in one safetensors file,
    replaced atomically, so a kill leaves the previous checkpoint or this one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{n}.{k}": v.detach().contiguous() for n, m in modules.items() for k, v in m.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(flat, tmp, metadata={"progress": json.dumps(progress)})
    tmp.replace(path)


def load_state(path: Path, modules: dict[str, nn.Module]) -> dict | None:
    """Load a checkpoint of `save_state` into `modules`; its progress, or None with no checkpoint."""
    if not path.exists():
        return None
    with safe_open(path, framework="pt") as f:
        progress = json.loads((f.metadata() or {}).get("progress", "{}"))  # {}: written before progress was kept
    weights = load_file(path)
    for name, module in modules.items():
        module.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(name + ".")})
    return progress
