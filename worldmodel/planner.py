"""Plan and act, after the 1X world model: imagine, infer actions, reject, evaluate, smooth.

1. imagine K futures from the current frame and the instruction, in one batch;
2. the IDM turns each future into actions, with a confidence per step;
3. reject futures the robot cannot execute (actions beyond the speed limit) or that the IDM
   does not trust, and imagine K more, up to a budget, if none survive;
4. the critic scores the survivors; the best is chosen;
5. its actions are averaged over IDM noise samples and, optionally, over a sliding window of
   overlapping plans (off when averaging distinct modes would blur them), and the first
   `execute_steps` are executed before planning again.
Every decision keeps all candidates, scores, rejection reasons and timings for the episode.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from infra.contracts.episode import CandidateRecord, Decision
from sim.tabletop import ALL_TASKS
from worldmodel.grounding import InstructionGrounder
from worldmodel.layers import tensor_to_frames
from worldmodel.planner_config import PlannerConfig
from worldmodel.policy import WorldModelPolicy

SPEED_LIMIT, UNTRUSTED = "exceeds_speed_limit", "idm_low_confidence"


@dataclass
class PlanDecision:
    candidates: list[CandidateRecord]
    chosen: int | None
    actions: np.ndarray  # (execute_steps, action_dim) to execute now
    imagined: np.ndarray  # uint8 (K_total, F, S, S, 3), every candidate imagined
    resamples: int
    timings_ms: dict[str, float]

    def record(self, step: int, policy_version: str | None = None) -> Decision:
        return Decision(
            step=step,
            candidates=self.candidates,
            chosen=self.chosen,
            resamples=self.resamples,
            latency_ms=sum(self.timings_ms.values()),
            policy_version=policy_version,
        )


@dataclass
class PlanRequest:
    """One robot's turn to decide; `pending` is that robot's sliding window of earlier plans."""

    prev_frame: np.ndarray
    frame: np.ndarray
    instruction: str
    step: int
    pending: dict[int, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class Planner:
    policy: WorldModelPolicy
    config: PlannerConfig = field(default_factory=PlannerConfig)
    # Predictions for future steps from earlier plans: step -> list of actions (sliding window).
    _pending: dict[int, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    _grounder: InstructionGrounder | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Weights laid out channels-last let oneDNN pick its faster CPU convolutions: `fleet bench
        # policy`'s p50 fell by 15%, the outcomes unchanged (README, "Issue 15, tenth session").
        for network in (self.policy.video_model, self.policy.idm, self.policy.critic):
            network.to(memory_format=torch.channels_last)

    def understood(self, instruction: str) -> str:
        """What the policy reads for `instruction`: itself, or the closest task instruction."""
        if not self.config.ground_instructions:
            return instruction
        if self._grounder is None:
            vocabulary = self.policy.text_encoder.config.vocab
            self._grounder = InstructionGrounder(vocabulary, [t.instruction for t in ALL_TASKS])
        return self._grounder(instruction).understood

    def reset(self) -> None:
        self._pending.clear()

    def decide(
        self,
        prev_frame: np.ndarray,
        frame: np.ndarray,
        instruction: str,
        step: int,
        generator: torch.Generator | None = None,
    ) -> PlanDecision:
        return self.decide_batch([PlanRequest(prev_frame, frame, instruction, step, self._pending)], generator)[0]

    @torch.no_grad()
    def decide_batch(self, requests: list[PlanRequest], generator: torch.Generator | None = None) -> list[PlanDecision]:
        """Decisions for several robots at once: every network runs once per round on all of them,
        which is what keeps a multi-robot process's cores busy. Timings are the batch's."""
        cfg, p, n = self.config, self.policy, len(requests)
        timings: dict[str, float] = defaultdict(float)
        clock = time.perf_counter

        t = clock()
        instructions = [self.understood(r.instruction) for r in requests]
        timings["ground"] += (clock() - t) * 1000

        t = clock()
        context = torch.stack([p.prepare(np.stack([r.prev_frame, r.frame])) for r in requests])  # (n, 2, 3, S, S)
        timings["encode"] += (clock() - t) * 1000

        records: list[list[CandidateRecord]] = [[] for _ in range(n)]
        videos: list[list[torch.Tensor]] = [[] for _ in range(n)]
        todo = list(range(n))
        for _ in range(cfg.resample_budget + 1):
            t = clock()
            text = p.text_encoder([instructions[i] for i in todo])
            video = p.video_model.sample(context[todo, 1], text, cfg.candidates, generator)  # (m, K, F, 3, S, S)
            timings["imagine"] += (clock() - t) * 1000

            t = clock()
            k = cfg.candidates
            frames = torch.cat([context[todo][:, None].expand(-1, k, -1, -1, -1, -1), video], dim=2)
            actions, confidence = p.idm.actions(frames.flatten(0, 1))  # transitions from the current frame on
            actions, confidence = actions.unflatten(0, (len(todo), k)), confidence.unflatten(0, (len(todo), k))
            timings["inverse_dynamics"] += (clock() - t) * 1000

            t = clock()
            for j, i in enumerate(todo):
                base = len(videos[i]) * k
                for c in range(k):
                    reason = self._rejection(actions[j, c], confidence[j, c]) if cfg.use_rejection else None
                    records[i].append(
                        CandidateRecord(index=base + c, rejected=reason is not None, rejection_reason=reason)
                    )
                videos[i].append(video[j])
            timings["reject"] += (clock() - t) * 1000
            todo = [i for i in todo if all(r.rejected for r in records[i])]
            if not todo:
                break

        all_video = [torch.cat(v) for v in videos]  # per robot (K_total, F, 3, S, S)
        alive = [[r.index for r in rs if not r.rejected] for rs in records]
        t = clock()
        chosen: list[int | None] = [a[0] if a else None for a in alive]
        rows = [i for i in range(n) if alive[i]]
        if rows and cfg.use_critic:
            clips = torch.cat(
                [
                    torch.cat(
                        [context[i, 1][None, None].expand(len(alive[i]), -1, -1, -1, -1), all_video[i][alive[i]]], dim=1
                    )
                    for i in rows
                ]
            )
            pooled = p.text_encoder([instructions[i] for i in rows]).pooled
            counts = torch.tensor([len(alive[i]) for i in rows])
            scores = p.critic.score(clips, pooled.repeat_interleave(counts, 0)).split(counts.tolist())
            for i, row_scores in zip(rows, scores, strict=True):
                for c, score in zip(alive[i], row_scores.tolist(), strict=True):
                    records[i][c].score = score
                chosen[i] = alive[i][int(torch.argmax(row_scores))]
        timings["critic"] += (clock() - t) * 1000

        t = clock()
        plans = [torch.cat([context[i], all_video[i][c]]) if c is not None else None for i, c in enumerate(chosen)]
        chunks = self._smoothed_actions(plans, requests, generator)
        timings["smooth"] += (clock() - t) * 1000
        return [
            PlanDecision(
                records[i], chosen[i], chunks[i], tensor_to_frames(all_video[i]), len(videos[i]) - 1, dict(timings)
            )
            for i in range(n)
        ]

    def _rejection(self, actions: torch.Tensor, confidence: torch.Tensor) -> str | None:
        cfg = self.config
        if actions[:, :2].abs().max() > cfg.speed_limit * (1 + cfg.speed_tolerance):
            return SPEED_LIMIT
        if confidence.min() < cfg.min_confidence:
            return UNTRUSTED
        return None

    def _smoothed_actions(
        self, plans: list[torch.Tensor | None], requests: list[PlanRequest], generator
    ) -> list[np.ndarray]:
        """IDM actions of each chosen plan averaged over noise samples (one IDM call for all
        robots), then over the robot's sliding window. No plan: hold still, gripper unchanged."""
        cfg = self.config
        hold = np.zeros((cfg.execute_steps, self.policy.idm.config.action_dim), np.float32)
        rows = [i for i, plan in enumerate(plans) if plan is not None]
        if not rows:
            return [hold] * len(plans)
        frames = torch.stack([plans[i] for i in rows])  # (m, T, 3, S, S)
        noisy = frames[:, None] + cfg.noise_std * torch.randn(
            (len(rows), cfg.noise_samples, *frames.shape[1:]), generator=generator, device=frames.device
        )
        actions, _ = self.policy.idm.actions(noisy.clamp(-1, 1).flatten(0, 1))
        means = actions.unflatten(0, (len(rows), cfg.noise_samples)).mean(1).cpu().numpy()  # (m, F, action_dim)
        out = [hold] * len(plans)
        for plan, i in zip(means, rows, strict=True):
            out[i] = self._window(plan, requests[i])
        return out

    def _window(self, plan: np.ndarray, request: PlanRequest) -> np.ndarray:
        cfg = self.config
        if cfg.smooth_window <= 1:
            return plan[: cfg.execute_steps].clip(-1, 1)
        for i, a in enumerate(plan):
            request.pending[request.step + i].append(a)
        out = []
        for i in range(cfg.execute_steps):
            window = request.pending.pop(request.step + i, [plan[i]])[-cfg.smooth_window :]
            out.append(np.mean(window, axis=0))
        return np.stack(out).clip(-1, 1)
