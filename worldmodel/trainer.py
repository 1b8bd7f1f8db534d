"""The one optimisation loop of worldfleet: the base stages and the learner's fine-tune both run it.

An objective is a module whose `forward(*batch)` returns `(loss, {part: loss})`; an engine wraps it
with AdamW and gradient clipping: `TorchEngine` in one process, `DeepSpeedEngine` for ranks
launched by torchrun (ZeRO stage from its config). `fit` runs steps, aborts every rank on a
non-finite loss, and calls back after each step so the caller can report and checkpoint; its
checkpoints are one format for both (`worldmodel.checkpoint.save_state`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from infra.errors import FleetError

WEIGHT_DECAY = 1e-4


class NonFiniteLoss(FleetError):
    """A loss went NaN or infinite on some rank: training stops before the weights are spoilt."""

    def __init__(self, step: int, parts: list[str]):
        which = ", ".join(parts) or "another rank's"
        super().__init__(f"non-finite {which} loss at step {step}")
        self.step, self.parts = step, parts


class Engine(Protocol):
    module: nn.Module

    def __call__(self, *batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> None: ...
    def gathered(self) -> contextlib.AbstractContextManager: ...


def _adamw(module: nn.Module, lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=WEIGHT_DECAY)


class TorchEngine:
    """One process, plain PyTorch."""

    def __init__(
        self, module: nn.Module, lr: float, max_grad_norm: float | None = None, autocast: torch.dtype | None = None
    ):
        self.module, self.max_grad_norm, self.autocast = module, max_grad_norm, autocast
        self.optimizer = _adamw(module, lr)

    def __call__(self, *batch):
        # The forward only: backward runs each op in the dtype its forward chose.
        device = next(self.module.parameters()).device.type  # autocast is per device type
        with torch.autocast(device, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            return self.module(*batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()

    def step(self) -> None:
        if self.max_grad_norm:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()

    def gathered(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


class DeepSpeedEngine:
    """A rank of a DeepSpeed run (gloo on CPU, NCCL on a GPU); a client AdamW, as DeepSpeed's fused
    optimisers need compiled ops."""

    def __init__(self, module: nn.Module, lr: float, config: dict):
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        self.module, self.zero_stage = module, config.get("zero_optimization", {}).get("stage", 0)
        self.engine, *_ = deepspeed.initialize(model=module, optimizer=_adamw(module, lr), config=config)

    def __call__(self, *batch):
        return self.engine(*batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def gathered(self) -> contextlib.AbstractContextManager:
        """Every rank enters it: under ZeRO-3 each holds only a shard until the parameters are gathered."""
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None)


def finite_everywhere(loss: torch.Tensor, world: int) -> bool:
    flag = torch.tensor([1.0 if torch.isfinite(loss).item() else 0.0])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def fit(
    engine: Engine,
    end: int,
    batch: Callable[[int], tuple] = lambda step: (step,),
    start: int = 0,
    world: int = 1,
    after_step: Callable[[int, float, dict[str, float]], None] | None = None,
) -> list[float]:
    """Steps `start` to `end` of `engine`'s objective on `batch(step)`; the losses, one per step.

    `after_step(done, loss, parts)` runs after each step with the number of steps done.
    """
    engine.module.train()
    losses = []
    for step in range(start, end):
        loss, parts = engine(*batch(step))
        if not finite_everywhere(loss, world):
            raise NonFiniteLoss(step, [k for k, v in parts.items() if not torch.isfinite(v)])
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
        if after_step:
            after_step(step + 1, losses[-1], {k: v.item() for k, v in parts.items()})
    return losses


class StageObjective(nn.Module):
    """A base stage's loss over the networks it trains, in the form every engine wraps."""

    def __init__(self, name: str, networks: list[nn.Module], loss: Callable[[], torch.Tensor]):
        super().__init__()
        self.name, self.networks, self.loss = name, nn.ModuleList(networks), loss

    def forward(self, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.loss()
        return loss, {self.name: loss}
