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
from worldmodel.layers import tensor_to_frames
from worldmodel.policy import WorldModelPolicy

SPEED_LIMIT, UNTRUSTED = "exceeds_speed_limit", "idm_low_confidence"


@dataclass
class PlannerConfig:
    candidates: int = 8
    resample_budget: int = 1  # extra rounds of K candidates when every one is rejected
    speed_limit: float = 1.0  # |dx|, |dy| in units of the embodiment's maximum step
    speed_tolerance: float = 0.25
    min_confidence: float = 0.2
    use_rejection: bool = True
    use_critic: bool = True  # False: take the first surviving candidate (no best-of-K)
    noise_samples: int = 4
    noise_std: float = 0.03
    smooth_window: int = 3  # 1 = no sliding-window averaging
    execute_steps: int = 2


@dataclass
class PlanDecision:
    candidates: list[CandidateRecord]
    chosen: int | None
    actions: np.ndarray  # (execute_steps, action_dim) to execute now
    imagined: np.ndarray  # uint8 (K_total, F, S, S, 3), every candidate imagined
    resamples: int
    timings_ms: dict[str, float]

    def record(self, step: int) -> Decision:
        return Decision(step=step, candidates=self.candidates, chosen=self.chosen, resamples=self.resamples,
                        latency_ms=sum(self.timings_ms.values()))  # fmt: skip


@dataclass
class Planner:
    policy: WorldModelPolicy
    config: PlannerConfig = field(default_factory=PlannerConfig)
    # Predictions for future steps from earlier plans: step -> list of actions (sliding window).
    _pending: dict[int, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))

    def reset(self) -> None:
        self._pending.clear()

    @torch.no_grad()
    def decide(self, prev_frame: np.ndarray, frame: np.ndarray, instruction: str, step: int,
               generator: torch.Generator | None = None) -> PlanDecision:  # fmt: skip
        cfg, p = self.config, self.policy
        timings: dict[str, float] = defaultdict(float)
        clock = time.perf_counter

        t = clock()
        text = p.text_encoder([instruction])
        context = p.prepare(np.stack([prev_frame, frame]))  # (2, 3, S, S)
        timings["encode"] += (clock() - t) * 1000

        records: list[CandidateRecord] = []
        videos, plans = [], []
        for round_ in range(cfg.resample_budget + 1):
            t = clock()
            video = p.video_model.sample(context[1:], text, cfg.candidates, generator)[0]  # (K, F, 3, S, S)
            timings["imagine"] += (clock() - t) * 1000

            t = clock()
            frames = torch.cat([context[None].expand(len(video), -1, -1, -1, -1), video], dim=1)
            actions, confidence = p.idm.actions(frames)  # transitions from the current frame on
            timings["inverse_dynamics"] += (clock() - t) * 1000

            t = clock()
            base = len(videos) * cfg.candidates
            for k in range(len(video)):
                reason = self._rejection(actions[k], confidence[k]) if cfg.use_rejection else None
                records.append(CandidateRecord(index=base + k, rejected=reason is not None, rejection_reason=reason))
            timings["reject"] += (clock() - t) * 1000
            videos.append(video)
            plans.append(frames)
            if any(not r.rejected for r in records) or round_ == cfg.resample_budget:
                break

        all_video, all_frames = torch.cat(videos), torch.cat(plans)
        alive = [r.index for r in records if not r.rejected]
        t = clock()
        if alive and cfg.use_critic:
            clips = torch.cat([context[1:].expand(len(alive), -1, -1, -1)[:, None], all_video[alive]], dim=1)
            scores = p.critic.score(clips, text.pooled.expand(len(alive), -1))
            for i, s in zip(alive, scores.tolist(), strict=True):
                records[i].score = s
            chosen = alive[int(torch.argmax(scores))]
        else:
            chosen = alive[0] if alive else None
        timings["critic"] += (clock() - t) * 1000

        t = clock()
        chunk = self._smoothed_actions(all_frames[chosen], step, generator) if chosen is not None else None
        if chunk is None:  # nothing executable was imagined: hold still, gripper unchanged
            chunk = np.zeros((cfg.execute_steps, p.idm.config.action_dim), np.float32)
        timings["smooth"] += (clock() - t) * 1000
        return PlanDecision(records, chosen, chunk, tensor_to_frames(all_video), len(videos) - 1, dict(timings))

    def _rejection(self, actions: torch.Tensor, confidence: torch.Tensor) -> str | None:
        cfg = self.config
        if actions[:, :2].abs().max() > cfg.speed_limit * (1 + cfg.speed_tolerance):
            return SPEED_LIMIT
        if confidence.min() < cfg.min_confidence:
            return UNTRUSTED
        return None

    def _smoothed_actions(self, frames: torch.Tensor, step: int, generator) -> np.ndarray:
        cfg = self.config
        noisy = frames[None] + cfg.noise_std * torch.randn(
            (cfg.noise_samples, *frames.shape), generator=generator, device=frames.device
        )
        actions, _ = self.policy.idm.actions(noisy.clamp(-1, 1))
        plan = actions.mean(0).cpu().numpy()  # averaged over noise samples: (F, action_dim)
        if cfg.smooth_window <= 1:
            return plan[: cfg.execute_steps].clip(-1, 1)
        for i, a in enumerate(plan):
            self._pending[step + i].append(a)
        out = []
        for i in range(cfg.execute_steps):
            window = self._pending.pop(step + i, [plan[i]])[-cfg.smooth_window :]
            out.append(np.mean(window, axis=0))
        return np.stack(out).clip(-1, 1)
