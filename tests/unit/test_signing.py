"""The learner's signature over a version: what it covers, where its key lives, what a robot needs."""

from __future__ import annotations

import stat

import pytest

from infra.errors import UsageError
from infra.settings import Settings
from registry import signing

DIGESTS = {"idm.safetensors": "a" * 64, "critic.json": "b" * 64}


def _learner(tmp_path) -> Settings:
    return Settings(stack={"state_dir": tmp_path / "learner"})


def _robot(tmp_path, verify_key: str | None) -> Settings:
    return Settings(stack={"state_dir": tmp_path / "robot"}, registry={"verify_key": verify_key})


def test_a_signature_covers_the_model_the_run_and_every_digest(tmp_path):
    learner = _learner(tmp_path)
    tag = signing.sign(learner, "policy", "run-1", DIGESTS)
    assert signing.is_signed_by_the_learner(learner, "policy", "run-1", DIGESTS, tag)
    assert not signing.is_signed_by_the_learner(learner, "policy", "run-2", DIGESTS, tag)
    assert not signing.is_signed_by_the_learner(learner, "other", "run-1", DIGESTS, tag)
    assert not signing.is_signed_by_the_learner(learner, "policy", "run-1", DIGESTS | {"critic.json": "c" * 64}, tag)
    assert not signing.is_signed_by_the_learner(learner, "policy", "run-1", DIGESTS, "not base64!")
    assert not signing.is_signed_by_the_learner(learner, "policy", "run-1", DIGESTS, "")


def test_the_key_is_made_once_private_to_its_owner_and_kept(tmp_path):
    learner = _learner(tmp_path)
    first = signing.public_key_text(learner)
    assert stat.S_IMODE(learner.signing_key_path.stat().st_mode) == 0o600
    signing._create(learner.signing_key_path)  # a second process racing to make one keeps the first
    assert signing.public_key_text(learner) == first
    assert [p.name for p in learner.signing_key_path.parent.iterdir()] == ["registry-signing.pem"]


def test_a_robot_checks_with_the_public_key_it_was_given(tmp_path):
    learner = _learner(tmp_path)
    tag = signing.sign(learner, "policy", "run-1", DIGESTS)
    robot = _robot(tmp_path, signing.public_key_text(learner))
    assert signing.is_signed_by_the_learner(robot, "policy", "run-1", DIGESTS, tag)
    assert not robot.signing_key_path.exists()  # it never needed, nor made, a private key


def test_a_robot_without_a_key_to_check_with_is_told_what_to_set(tmp_path):
    with pytest.raises(UsageError, match="registry.verify_key is unset") as e:
        signing.is_signed_by_the_learner(_robot(tmp_path, None), "policy", "run-1", DIGESTS, "x")
    assert "FLEET_REGISTRY__VERIFY_KEY" in e.value.hint
    with pytest.raises(UsageError, match="not a base64 Ed25519 public key"):
        signing.is_signed_by_the_learner(_robot(tmp_path, "abc"), "policy", "run-1", DIGESTS, "x")
