"""Training and evaluation, end to end at toy scale: runs, resumes, writes a loadable policy."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from infra.errors import UsageError
from worldmodel.diagnose import diagnose
from worldmodel.evaluate import SPLITS, _episode, _in_processes, _load_worker, evaluate
from worldmodel.objectives import critic_instructions, critic_loss, idm_loss, imagine_windows
from worldmodel.planner import PlannerConfig
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import StageData, robot_logs
from worldmodel.train import PROFILES, STAGES, train_all
from worldmodel.trainer import NonFiniteLoss, StageObjective, TorchEngine, fit


def train_idm(policy, data, steps, profile, rng, imagined=None) -> list[float]:
    objective = StageObjective("idm", [policy.idm], lambda: idm_loss(policy, data, profile.batch, rng, imagined))
    return fit(TorchEngine(objective, profile.lr), steps)


def test_tiny_train_and_eval_end_to_end_and_resume(tmp_path):
    report = train_all(PROFILES["ci"], tmp_path)
    assert set(report["timings_s"]) >= {"pretrain_s", "midtrain_s", "posttrain_s", "idm_s", "idm_adapt_s", "critic_s"}
    policy = WorldModelPolicy.load(tmp_path / "policy")
    assert WorldModelPolicy.locate(tmp_path) == tmp_path / "policy"  # `fleet eval --policy RUN_DIR` finds it
    result = evaluate(policy, episodes=1).model_dump(mode="json")
    assert json.loads(json.dumps(result)) == result  # plain JSON, no numpy scalars
    # shared among two single-thread processes: the same episodes, in seed order, the same outcomes
    jobs = [(split, 10_000 + i) for split in SPLITS for i in range(3)]
    worker = _load_worker(tmp_path, PlannerConfig(), "simulator", None, None)
    one = [_episode(worker, job) for job in jobs]
    two = _in_processes(tmp_path, PlannerConfig(), "simulator", None, None, jobs, 2, None)
    assert [(r["task_id"], r["success"]) for r in two] == [(r["task_id"], r["success"]) for r in one]
    assert len({r["task_id"] for r in one}) > 1  # the seeds differ, so a shifted seed would show
    assert {
        "success_rate",
        "success_ci95",
        "heldout_success_rate",
        "heldout_ci95",
        "random_success_rate",
        "random_heldout_success_rate",
        "decision_latency_ms_p50",
        "decision_latency_ms_p95",
        "rejection_rate",
    } <= set(result)

    found = diagnose(policy, episodes=1)
    rates = [v for k, v in found.items() if "agreement" in k or "success" in k]
    assert len(rates) == 7 and all(0 <= r <= 1 for r in rates)
    assert found["critic_rank_correlation"] is None or -1 <= found["critic_rank_correlation"] <= 1
    assert found["point_sensitivity"] >= 0

    again = train_all(PROFILES["ci"], tmp_path)  # every stage is checkpointed: nothing is redone
    assert again["trained"] == [] and report["trained"] == list(STAGES)
    # and the report still says what each stage cost when it ran
    assert again["timings_s"] == {**report["timings_s"], "data_s": again["timings_s"]["data_s"]}
    assert again["critic_loss_first_last"] == report["critic_loss_first_last"]


def test_idm_learns_the_robots_actions():
    torch.manual_seed(0)
    policy = WorldModelPolicy.create(["<pad>", "<unk>"])
    data = StageData.build(robot_logs(12, seed=0, size=64, noise=0.3), policy)
    profile = PROFILES["quick"]
    losses = train_idm(policy, data, 150, profile, np.random.default_rng(0))
    assert np.mean(losses[-15:]) < np.mean(losses[:15]) - 0.2


def test_imagined_windows_start_from_real_frames_and_carry_the_robots_actions():
    torch.manual_seed(0)
    policy = WorldModelPolicy.create(["<pad>", "<unk>"])
    data = StageData.build(robot_logs(6, seed=0, size=64), policy)
    future = policy.video_model.config.future_frames
    windows = imagine_windows(policy, data, 5, np.random.default_rng(0), batch=2)
    assert windows.frames.shape == (5, 2 + future, 3, 32, 32) and windows.actions.shape == (5, future, 3)

    def origin(frames: torch.Tensor, actions: torch.Tensor) -> tuple[int, int] | None:
        for c, (clip, real) in enumerate(zip(data.clips, data.frames, strict=True)):
            for t in range(1, len(real) - future):
                if torch.equal(real[t - 1 : t + 1], frames[:2]) and np.allclose(clip.actions[t : t + future], actions):
                    return c, t
        return None

    assert all(origin(f, a) is not None for f, a in zip(windows.frames, windows.actions, strict=True))
    losses = train_idm(policy, data, 5, PROFILES["ci"], np.random.default_rng(0), imagined=windows)
    assert np.isfinite(losses).all()


def test_a_non_finite_loss_stops_training_and_names_the_loss():
    policy = WorldModelPolicy.create(["<pad>", "<unk>"])
    nan = StageObjective("idm", [policy.idm], lambda: policy.idm.head[-1].weight.sum() * float("nan"))
    with pytest.raises(NonFiniteLoss, match="non-finite idm loss at step 0"):
        fit(TorchEngine(nan, 1e-3), 3)


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_the_weights_and_their_updates_in_float32():
    conv = torch.nn.Conv2d(3, 4, 3)
    seen = []
    conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    objective = StageObjective("conv", [conv], lambda: conv(torch.randn(2, 3, 8, 8)).float().square().mean())
    before = conv.weight.detach().clone()
    losses = fit(TorchEngine(objective, 1e-2, autocast=torch.bfloat16), 2)
    assert seen == [torch.bfloat16] * 2 and np.isfinite(losses).all()
    assert conv.weight.dtype == torch.float32 and not torch.equal(conv.weight, before)


def test_a_profile_out_of_range_is_refused_when_it_is_made():
    with pytest.raises(ValueError, match="batch"):
        PROFILES["ci"].__class__(batch=0)


def test_a_run_directory_from_before_the_one_checkpoint_format_resumes_where_it_stopped(tmp_path):
    train_all(PROFILES["ci"], tmp_path)
    state = tmp_path / "checkpoints" / "state.safetensors"
    save_file(load_file(state), state)  # the old format: weights only, progress in a JSON file beside them
    old_names = ["pretrain", "midtrain", "finetune", "idm", "idm_adapt", "critic"]
    (tmp_path / "checkpoints" / "progress.json").write_text(json.dumps(old_names))
    assert train_all(PROFILES["ci"], tmp_path)["trained"] == []


def test_a_directory_trained_as_another_profile_is_refused_not_resumed(tmp_path):
    train_all(PROFILES["ci"], tmp_path)
    other = dataclasses.replace(PROFILES["ci"], lr=PROFILES["ci"].lr / 2)
    with pytest.raises(UsageError, match="differs in lr"):
        train_all(other, tmp_path)


def test_a_finished_stage_trains_again_when_asked_and_the_others_stay(tmp_path):
    train_all(PROFILES["ci"], tmp_path)
    again = train_all(PROFILES["ci"], tmp_path, redo_stages=("critic",))
    assert again["trained"] == ["critic"]


def test_the_critic_learns_that_a_future_making_progress_beats_a_worse_one_from_the_same_frame():
    torch.manual_seed(0)
    policy = WorldModelPolicy.create(["<pad>", "<unk>"])
    data = StageData.build(robot_logs(30, seed=0, size=64), policy)
    rng = np.random.default_rng(0)
    instructions = critic_instructions(data)
    objective = StageObjective("critic", [policy.critic], lambda: critic_loss(policy, data, 16, rng, instructions))
    fit(TorchEngine(objective, 2e-3), 300)

    unseen = StageData.build(robot_logs(8, seed=99, size=64), policy)
    future, wins, pairs = policy.critic.config.frames - 1, {"static": 0, "backward": 0}, 0
    for frames, clip in zip(unseen.frames, unseen.clips, strict=True):
        text = policy.text_encoder([clip.caption]).pooled.expand(3, -1)
        for t in range(future, len(frames) - future, 3):
            first = frames[t : t + 1]
            real = frames[t + 1 : t + future + 1]
            static = frames[t].expand(future, -1, -1, -1)
            backward = frames[t - future : t].flip(0)
            scores = policy.critic.score(torch.stack([torch.cat([first, v]) for v in (real, static, backward)]), text)
            wins["static"] += bool(scores[0] > scores[1])
            wins["backward"] += bool(scores[0] > scores[2])
            pairs += 1
    assert pairs >= 20
    assert wins["static"] / pairs >= 0.75 and wins["backward"] / pairs >= 0.75, (wins, pairs)
