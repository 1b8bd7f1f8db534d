"""Training and evaluation, end to end at toy scale: runs, resumes, writes a loadable policy."""

import json

import numpy as np
import torch

from worldmodel.diagnose import diagnose
from worldmodel.evaluate import evaluate, wilson
from worldmodel.policy import WorldModelPolicy
from worldmodel.stage_data import robot_logs
from worldmodel.train import PROFILES, StageData, train_all, train_idm


def test_tiny_train_and_eval_end_to_end_and_resume(tmp_path):
    report = train_all(PROFILES["ci"], tmp_path)
    assert set(report["timings_s"]) >= {"pretrain_s", "midtrain_s", "finetune_s", "idm_s", "critic_s"}
    policy = WorldModelPolicy.load(tmp_path / "policy")
    result = evaluate(policy, episodes=1)
    assert json.loads(json.dumps(result)) == result  # plain JSON, no numpy scalars
    assert {"success_rate", "success_ci95", "heldout_success_rate", "heldout_ci95", "random_success_rate",
            "decision_latency_ms_p50", "decision_latency_ms_p95", "rejection_rate"} <= set(result)  # fmt: skip

    found = diagnose(policy, episodes=1)
    rates = [v for k, v in found.items() if "agreement" in k or "success" in k]
    assert len(rates) == 5 and all(0 <= r <= 1 for r in rates)

    again = train_all(PROFILES["ci"], tmp_path)  # every stage is checkpointed: nothing is redone
    assert set(again["timings_s"]) == {"data_s"}


def test_idm_learns_the_robots_actions():
    torch.manual_seed(0)
    policy = WorldModelPolicy.create(["<pad>", "<unk>"])
    data = StageData.build(robot_logs(12, seed=0, size=64, noise=0.3), policy)
    profile = PROFILES["quick"]
    losses = train_idm(policy, data, 150, profile, np.random.default_rng(0))
    assert np.mean(losses[-15:]) < np.mean(losses[:15]) - 0.2


def test_wilson_interval_behaves_at_the_edges():
    assert wilson(0, 10)[0] == 0.0 and 0.2 < wilson(0, 10)[1] < 0.35
    lo, hi = wilson(10, 20)
    assert lo < 0.5 < hi and hi - lo < 0.45
