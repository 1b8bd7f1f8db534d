"""`fleet attribute`: the base with one fine-tuned part swapped in, each paired with the base."""

from __future__ import annotations

import torch

from registry.model_store import file_digests
from sim.tabletop import TabletopConfig
from worldmodel import attribution
from worldmodel.attribution import FINE_TUNED, attribute, swap_in
from worldmodel.policy import WorldModelPolicy


def _tuned(base, directory):
    """The base with only its critic changed, as if a fine-tune had moved that part alone."""
    policy = WorldModelPolicy.load(base)
    with torch.no_grad():
        for weight in policy.critic.parameters():
            weight.add_(0.1)
    return policy.save(directory)


def test_a_hybrid_is_the_base_with_exactly_one_part_from_the_tuned_policy(tiny_policy_dir, tmp_path):
    tuned = _tuned(tiny_policy_dir, tmp_path / "tuned")
    base_files, tuned_files = file_digests(tiny_policy_dir), file_digests(tuned)
    assert base_files["critic.safetensors"] != tuned_files["critic.safetensors"]

    hybrid = file_digests(swap_in(tiny_policy_dir, tuned, "critic", tmp_path / "base+critic"))
    assert hybrid["critic.safetensors"] == tuned_files["critic.safetensors"]
    assert {k: v for k, v in hybrid.items() if not k.startswith("critic")} == {
        k: v for k, v in base_files.items() if not k.startswith("critic")
    }
    unchanged = file_digests(swap_in(tiny_policy_dir, tuned, "idm", tmp_path / "base+idm"))
    assert unchanged == base_files  # the tuned policy's IDM is the base's


def test_attribution_pairs_every_hybrid_with_the_base_on_the_same_seeds(tiny_policy_dir, tmp_path):
    tuned = _tuned(tiny_policy_dir, tmp_path / "tuned")
    result = attribute(tiny_policy_dir, tuned, episodes=1, work=tmp_path / "work")
    assert list(result.effects) == ["tuned", *FINE_TUNED] and result.seeds == 2
    for effect in result.effects.values():
        paired = effect.against_base
        assert paired.episodes == 2 and paired.b_successes == round(result.base_success_rate * 2)
        assert paired.a_successes == round(effect.success_rate * 2)


def test_every_policy_runs_on_the_arm_it_is_asked_for(tiny_policy_dir, tmp_path, monkeypatch):
    """A fleet on a turned arm: the base, the tuned policy and the hybrids all run on that arm."""
    arms, evaluate = [], attribution.evaluate

    def recording(directory, episodes, **options):
        arms.append(options["env"].arm_turn_deg)
        return evaluate(directory, episodes, **options)

    monkeypatch.setattr(attribution, "evaluate", recording)
    tuned = _tuned(tiny_policy_dir, tmp_path / "tuned")
    result = attribute(tiny_policy_dir, tuned, episodes=1, work=tmp_path / "work", env=TabletopConfig(arm_turn_deg=90))
    assert arms == [90.0] * (2 + len(FINE_TUNED)) and result.arm_turn_deg == 90.0
