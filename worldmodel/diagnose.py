"""Where a policy breaks: the IDM on real frames, the IDM on real futures, then imagined futures.

Success alone does not say which part failed. On seeded expert episodes of seen tasks this asks:
1. Does the IDM read the robot's actions from real frames it was not trained on? On a given arm
   mounting (`arm_turn_deg`): a fleet's arm that moves otherwise than the logs' arm for the same
   command (the expert, which knows only the logs' arm, still gives it commands to read).
2. Does the robot succeed when the IDM is handed the real future (a perfect world model)?
3. Does the grounding head find the instruction's object and goal in the frame?
4. Do imagined futures move the way the expert did, and does the instruction change them? An
   agreement that stays the same under a wrong instruction means the video model ignores text.
5. Does the generator use the grounded points? Point sensitivity is how much of the imagined
   change moves when the points are mirrored through the centre of the frame, same noise: near 0,
   the generator ignores them.
6. What decides push and stack: does the gripper open and close when the expert's does (on real
   frames and in imagined futures)?
7. Does the critic rank a decision's K candidates by how well they agree with the expert? The
   within-decision Spearman correlation of its score with each candidate's agreement; the same
   with each candidate's motion size is a bias check (a critic that prefers big motions).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from sim.scripted import expert_action, run_expert
from sim.tabletop import SEEN_TASKS, TabletopConfig, TabletopEnv, Task
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import task_points


def _sign_agreement(predicted: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.sign(predicted[..., :2]) == np.sign(true[..., :2])))


def _gripper_agreement(predicted: np.ndarray, true: np.ndarray) -> float:
    """Share of steps whose gripper command (> 0 closes) is the expert's."""
    return float(np.mean((predicted[..., 2] > 0) == (true[..., 2] > 0)))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Rank correlation of two samples (average ranks for ties); None when either is constant."""
    ranks = [_ranks(np.asarray(x, dtype=float)) for x in (a, b)]
    if any(np.ptp(r) == 0 for r in ranks):
        return None
    return float(np.corrcoef(*ranks)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties share their average rank
        ranks[x == value] = ranks[x == value].mean()
    return ranks


def idm_on_real_frames(policy: WorldModelPolicy, episodes: int, seed: int, arm_turn_deg: float = 0.0) -> dict:
    env, errors, agreement, gripper = TabletopEnv(TabletopConfig(arm_turn_deg=arm_turn_deg), split="seen"), [], [], []
    for i in range(episodes):
        log = run_expert(env, seed + i, noise=0.2)
        predicted, _ = policy.idm.actions(policy.prepare(log["frames"])[None])
        true = log["actions"][1:].clip(-1, 1)  # the first transition has no frame before it
        errors.append(float(np.abs(predicted[0].numpy()[:, :2] - true[:, :2]).mean()))
        agreement.append(_sign_agreement(predicted[0].numpy(), true))
        gripper.append(_gripper_agreement(predicted[0].numpy(), true))
    return {
        "idm_arm_turn_deg": arm_turn_deg,
        "idm_action_error": round(float(np.mean(errors)), 4),
        "idm_sign_agreement": round(float(np.mean(agreement)), 4),
        "idm_gripper_agreement": round(float(np.mean(gripper)), 4),
    }


def idm_on_real_futures(policy: WorldModelPolicy, episodes: int, seed: int) -> float:
    """Success rate when each plan's future is the one the expert would have produced."""
    env, future, wins = TabletopEnv(split="seen"), policy.video_model.config.future_frames, 0
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        rng, prev, done = np.random.default_rng(seed + i), obs["rgb"], False
        while not done:
            ghost, frames = copy.deepcopy(env), []
            for _ in range(future):
                frames.append(ghost.step(expert_action(ghost, rng))[0]["rgb"])
            actions, _ = policy.idm.actions(policy.prepare(np.stack([prev, obs["rgb"], *frames]))[None])
            for action in actions[0, :2].numpy():
                prev = obs["rgb"]
                obs, _, terminated, truncated, info = env.step(action.clip(-1, 1))
                done = terminated or truncated
                if done:
                    break
        wins += info["success"]
    return wins / episodes


def imagined_motion(policy: WorldModelPolicy, episodes: int, seed: int, k: int = 8) -> dict:
    """IDM reading of imagined futures against the expert's actions, with the right and a wrong instruction."""
    env, future = TabletopEnv(split="seen"), policy.video_model.config.future_frames
    out: dict[str, list[float]] = {
        "right": [],
        "wrong": [],
        "best_of_k": [],
        "imagined_speed": [],
        "real_speed": [],
        "grounding": [],
        "point_sensitivity": [],
        "gripper": [],
        "critic_rank": [],
        "critic_motion_rank": [],
    }
    for i in range(episodes):
        log = run_expert(env, seed + i, noise=0.0)
        frames = policy.prepare(log["frames"])
        true_points = torch.as_tensor(task_points(Task.parse(log["task_id"]), log["states"]))
        wrong = next(t.instruction for t in SEEN_TASKS[i % len(SEEN_TASKS) :] + SEEN_TASKS if t.id != log["task_id"])
        texts = {"right": policy.text_encoder([log["instruction"]]), "wrong": policy.text_encoder([wrong])}
        points = policy.video_model.grounding(frames, texts["right"].repeat_interleave(len(frames)))
        out["grounding"].append(float((points - true_points).abs().amax(-1).mean()))
        for t0 in range(1, len(log["actions"]) - future, 3):
            true = log["actions"][t0 : t0 + future]
            first, context = frames[t0 : t0 + 1], frames[t0 - 1 : t0 + 1][None].expand(k, -1, -1, -1, -1)
            for which, text in texts.items():
                video = policy.video_model.sample(first, text, k, torch.Generator().manual_seed(seed + t0))[0]
                actions = policy.idm.actions(torch.cat([context, video], dim=1))[0].numpy()
                per_candidate = [_sign_agreement(a, true) for a in actions]
                out[which].append(float(np.mean(per_candidate)))
                if which == "right":
                    out["gripper"].append(float(np.mean([_gripper_agreement(a, true) for a in actions])))
                    clips = torch.cat([first[:, None].expand(k, -1, -1, -1, -1), video], dim=1)
                    scores = policy.critic.score(clips, text.pooled.expand(k, -1)).numpy()
                    motion = np.abs(actions[..., :2]).mean(axis=(1, 2))
                    for key, against in (("critic_rank", per_candidate), ("critic_motion_rank", motion)):
                        if (rho := spearman(scores, np.asarray(against))) is not None:
                            out[key].append(rho)
                    # Same noise, points mirrored through the frame's centre: how much of the motion moves.
                    moved = policy.video_model.sample(
                        first, text, k, torch.Generator().manual_seed(seed + t0), points=1 - points[t0 : t0 + 1]
                    )[0]
                    out["point_sensitivity"].append(
                        float((moved - video).abs().mean() / (video - first).abs().mean().clamp(min=1e-6))
                    )
                    out["best_of_k"].append(max(per_candidate))
                    out["imagined_speed"].append(float(np.abs(actions[..., :2]).mean()))
                    out["real_speed"].append(float(np.abs(true[:, :2]).mean()))
    m = {key: round(float(np.mean(v)), 4) if v else None for key, v in out.items()}
    return {
        "imagined_sign_agreement": m["right"],
        "imagined_sign_agreement_wrong_instruction": m["wrong"],
        "imagined_sign_agreement_best_of_k": m["best_of_k"],
        "imagined_speed": m["imagined_speed"],
        "expert_speed": m["real_speed"],
        "grounding_error": m["grounding"],
        "point_sensitivity": m["point_sensitivity"],
        "imagined_gripper_agreement": m["gripper"],
        "critic_rank_correlation": m["critic_rank"],  # within a decision, score against agreement with the expert
        "critic_motion_rank_correlation": m["critic_motion_rank"],  # a bias check: score against motion size
        "critic_ranked_decisions": len(out["critic_rank"]),
    }


@torch.no_grad()
def diagnose(policy: WorldModelPolicy, episodes: int = 10, seed: int = 20_000, arm_turn_deg: float = 0.0) -> dict:
    """`arm_turn_deg`: the arm the IDM's reading of real frames is measured on (question 1)."""
    policy.eval()
    return {
        **idm_on_real_frames(policy, episodes, seed, arm_turn_deg),
        "idm_on_real_futures_success_rate": idm_on_real_futures(policy, episodes, seed),
        **imagined_motion(policy, episodes, seed),
        "episodes": episodes,
    }
