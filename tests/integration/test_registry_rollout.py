"""Policy versions in a real MLflow registry (artifacts in the stack's S3), verified on load, and
rolled out through the state machine with every transition announced on Kafka."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading

import pytest

from infra.clients import read_topic, s3_client
from infra.contracts.rollout import RolloutEvent
from registry.analysis import Arm
from registry.lease import RolloutBusy, RolloutLease
from registry.model_store import DIGESTS_TAG, ModelStore, TamperedModel, file_digests, resolve_policy
from registry.rollout import HISTORY_PREFIX, HISTORY_TAG, CorruptHistory, Rollout, RolloutError
from registry.signing import SIGNATURE_TAG, public_key_text
from worldmodel.policy import WorldModelPolicy

pytestmark = pytest.mark.integration


def _rollout_events(settings) -> list[RolloutEvent]:
    events = (RolloutEvent.model_validate_json(m.value) for m in read_topic(settings, settings.kafka.rollouts_topic))
    return sorted(events, key=lambda e: e.at)


def test_a_registered_version_carries_lineage_and_loads_verified(tracked, tiny_policy_dir):
    store = ModelStore(tracked)
    v = store.register(
        tiny_policy_dir,
        lineage={"parent_version": "base", "dataset_manifest": "s3://m/1.json"},
        metrics={"success_rate": 0.25},
    )

    assert v.version == "1" and v.digests == file_digests(tiny_policy_dir)
    assert v.tags["parent_version"] == "base" and v.tags["eval.success_rate"] == "0.25"
    assert len(v.tags["code_revision"]) >= 7
    local = store.fetch(v)
    assert file_digests(local) == file_digests(tiny_policy_dir)
    Rollout(tracked, store).crown(v.version)
    assert resolve_policy(tracked, f"models:/{store.name}@champion") == local
    assert isinstance(store.load(v), WorldModelPolicy)


def test_a_fetch_that_another_process_finished_first_uses_its_verified_copy(tracked, tiny_policy_dir, monkeypatch):
    store = ModelStore(tracked)
    v = store.register(tiny_policy_dir, lineage={"parent_version": "none", "dataset_manifest": "m"})
    real_call = store._call

    def download_while_another_fetch_lands(what, fn, **kwargs):
        got = real_call(what, fn, **kwargs)  # the real download from MLflow and S3
        shutil.copytree(got, tracked.model_cache_dir / store.name / v.version)  # the other fetch renames first
        return got

    monkeypatch.setattr(store, "_call", download_while_another_fetch_lands)
    local = store.fetch(v)

    assert file_digests(local) == v.digests


def _forge_in_storage(settings, v, file: str = "idm.safetensors") -> bytes:
    """What someone with write access to the artifact bucket can do: swap a file's last bytes."""
    s3 = s3_client(settings)
    key = next(
        o.object_name
        for o in s3.list_objects(settings.s3.mlflow_bucket, recursive=True)
        if v.run_id in o.object_name and o.object_name.endswith(f"policy/{file}")
    )
    forged = s3.get_object(settings.s3.mlflow_bucket, key).read()[:-8] + b"\x00" * 8
    s3.put_object(settings.s3.mlflow_bucket, key, io.BytesIO(forged), len(forged))
    return forged


def test_weights_tampered_in_storage_are_refused(tracked, tiny_policy_dir):
    store = ModelStore(tracked)
    v = store.register(tiny_policy_dir)
    _forge_in_storage(tracked, v)  # the IDM's weights, swapped for other bytes

    with pytest.raises(TamperedModel, match="idm.safetensors"):
        store.fetch(v)
    assert not (tracked.model_cache_dir / store.name / v.version).exists()


def _forge_storage_and_tags(settings, store: ModelStore, v, file: str = "idm.safetensors") -> dict[str, str]:
    """And with write access to MLflow tags too, but no key: the new file's sha256 in the digests tag."""
    digests = v.digests | {file: hashlib.sha256(_forge_in_storage(settings, v, file)).hexdigest()}
    store.tag(v.version, DIGESTS_TAG, json.dumps(digests, sort_keys=True))
    return digests


def test_weights_and_digests_forged_together_are_refused_for_want_of_the_learners_signature(tracked, tiny_policy_dir):
    store = ModelStore(tracked)
    v = store.register(tiny_policy_dir)
    _forge_storage_and_tags(tracked, store, v)
    forged = store.get(v.version)
    with pytest.raises(TamperedModel, match="not signed by the learner's key"):
        store.fetch(forged)
    assert not (tracked.model_cache_dir / store.name / v.version).exists()


def test_a_signature_copied_from_another_version_is_refused(tracked, tiny_policy_dir):
    store = ModelStore(tracked)
    first, second = store.register(tiny_policy_dir), store.register(tiny_policy_dir)
    # same files, so the same digests: the signature still names the other version's run
    store.tag(second.version, SIGNATURE_TAG, first.tags[SIGNATURE_TAG])
    with pytest.raises(TamperedModel, match="signature does not match"):
        store.fetch(store.get(second.version))
    store.fetch(store.get(first.version))  # the one it belongs to still loads


def test_a_robot_given_another_learners_public_key_refuses_every_version(tracked, tiny_policy_dir, tmp_path):
    v = ModelStore(tracked).register(tiny_policy_dir)
    elsewhere = tracked.model_copy(update={"stack": tracked.stack.model_copy(update={"state_dir": tmp_path / "other"})})
    other_key = public_key_text(elsewhere)
    robot = tracked.model_copy(update={"registry": tracked.registry.model_copy(update={"verify_key": other_key})})
    with pytest.raises(TamperedModel, match="signature does not match"):
        ModelStore(robot).fetch(v)
    mine = tracked.model_copy(
        update={"registry": tracked.registry.model_copy(update={"verify_key": public_key_text(tracked)})}
    )
    ModelStore(mine).fetch(v)  # the learner's own public key, given as a robot is given it


def test_a_tampered_local_copy_is_refused_on_the_next_load(tracked, tiny_policy_dir):
    store = ModelStore(tracked)
    v = store.register(tiny_policy_dir)
    local = store.fetch(v)
    (local / "critic.json").write_text(json.dumps({"size": 32, "frames": 5, "channels": [8], "text_dim": 64}))
    with pytest.raises(TamperedModel, match="critic.json"):
        store.load(v)


def test_a_version_registered_by_other_hands_is_listed_as_refused_and_never_loaded(tracked, tiny_policy_dir):
    store, rollout = ModelStore(tracked), Rollout(tracked)
    champion, candidate = store.register(tiny_policy_dir), store.register(tiny_policy_dir)
    rollout.crown(champion.version)
    # someone with MLflow write access registers a version of our model outside the learner,
    # with no digests, and scribbles over a version's rollout history
    theirs = store.client.create_model_version(store.name, f"runs:/{champion.run_id}/policy", run_id=champion.run_id)
    store.tag(candidate.version, HISTORY_TAG, "not json")

    listed = {v.version: v for v in store.versions()}
    assert listed[champion.version].refused == "" and listed[champion.version].digests == champion.digests
    assert "no readable weights_sha256 tag" in listed[theirs.version].refused
    with pytest.raises(TamperedModel, match="no readable weights_sha256 tag"):
        store.get(theirs.version)
    # the transitions go on over the unreadable history tag
    rollout.start_canary(candidate.version, 0.25)
    assert [h["state"] for h in json.loads(store.get(candidate.version).tags[HISTORY_TAG])] == ["canary"]
    states = {v["version"]: v["state"] for v in rollout.status()["versions"]}
    assert states == {champion.version: "champion", candidate.version: "canary", theirs.version: "refused"}
    rollout.close()


def test_rollout_rolls_back_a_worse_canary_promotes_a_better_one_and_restores_on_demand(tracked, tiny_policy_dir):
    store, rollout = ModelStore(tracked), Rollout(tracked)
    v1, v2, v3 = (store.register(tiny_policy_dir).version for _ in range(3))
    rollout.crown(v1)
    with pytest.raises(RolloutError, match="no canary"):
        rollout.promote()

    rollout.start_canary(v2, fraction=0.25)
    with pytest.raises(RolloutError, match="already in canary"):
        rollout.start_canary(v3, fraction=0.25)
    assert rollout.decide(v2, Arm(2, 10), Arm(30, 60)).decision == "wait"
    verdict = rollout.decide(v2, Arm(3, 40), Arm(30, 60))
    assert verdict.decision == "rollback" and verdict.p_worse < 0.05
    assert store.aliases() == {"champion": v1}

    rollout.start_canary(v3, fraction=0.25)
    assert rollout.decide(v3, Arm(28, 40), Arm(30, 60)).decision == "promote"
    assert store.aliases() == {"champion": v3, "previous": v1}

    rollout.rollback()
    assert store.aliases() == {"champion": v1, "previous": v3}
    states = {v["version"]: v["state"] for v in rollout.status()["versions"]}
    assert states == {v1: "champion", v2: "rolled_back", v3: "rolled_back"}
    assert "canary_analysis" in store.get(v2).tags

    events = _rollout_events(tracked)
    assert [(e.version, e.state.value) for e in events] == [
        (v1, "champion"),
        (v2, "canary"),
        (v2, "rolled_back"),
        (v3, "canary"),
        (v1, "retired"),
        (v3, "champion"),
        (v3, "rolled_back"),
        (v1, "champion"),
    ]
    assert events[1].canary_fraction == 0.25 and events[-1].aliases == {"champion": v1, "previous": v3}
    # the append-only history in S3 holds the same transitions
    assert [(e.version, e.state) for e in rollout.history()] == [(e.version, e.state) for e in events]
    rollout.close()


def test_an_object_in_the_rollout_history_that_is_not_an_event_is_named_not_blamed_on_s3(tracked, tiny_policy_dir):
    store, rollout = ModelStore(tracked), Rollout(tracked)
    rollout.crown(store.register(tiny_policy_dir).version, "first")
    stray = f"{HISTORY_PREFIX}/{store.name}/9999-stray.json"
    s3_client(tracked).put_object(tracked.s3.mlflow_bucket, stray, io.BytesIO(b"{}"), 2)
    with pytest.raises(CorruptHistory, match=f"s3://{tracked.s3.mlflow_bucket}/{stray} is not a rollout event"):
        rollout.history()
    rollout.close()


def test_a_timed_out_canary_keeps_the_champion_and_never_demotes_it(tracked, tiny_policy_dir):
    store, rollout = ModelStore(tracked), Rollout(tracked)
    v1, v2, v3 = (store.register(tiny_policy_dir).version for _ in range(3))
    rollout.crown(v1)
    rollout.crown(v2)  # v1 is now `previous`: what a blind rollback would restore
    rollout.start_canary(v3, fraction=0.25)

    verdict = rollout.decide(v3, Arm(0, 3), Arm(1, 3), final=True)  # time is up, nothing can be told
    assert verdict.decision == "keep"
    assert store.aliases() == {"champion": v2, "previous": v1}
    # the same verdict acted on twice (a retried task) changes nothing
    rollout.decide(v3, Arm(0, 3), Arm(1, 3), final=True)
    assert store.aliases() == {"champion": v2, "previous": v1}
    states = {v["version"]: v["state"] for v in rollout.status()["versions"]}
    assert states == {v1: "retired", v2: "champion", v3: "rolled_back"}
    rollout.close()


def test_a_transition_names_its_version_and_leaves_another_canary_alone(tracked, tiny_policy_dir):
    store, rollout = ModelStore(tracked), Rollout(tracked)
    v1, v2, v3 = (store.register(tiny_policy_dir).version for _ in range(3))
    rollout.crown(v1)
    rollout.start_canary(v2, fraction=0.25)
    rollout.end_canary(v2, "an operator stopped it")
    rollout.start_canary(v3, fraction=0.25)
    # a learner still analysing v2 acts late: it must not promote or end v3
    with pytest.raises(RolloutError, match=f"version {v2} is not in canary"):
        rollout.promote(v2, "late verdict")
    rollout.end_canary(v2, "late verdict")  # already ended: announced again, nothing moves
    assert store.aliases() == {"champion": v1, "canary": v3}
    # killed after clearing the alias, before recording the state: the retry records it
    store.delete_alias("canary")
    rollout.end_canary(v3, "canary analysis: retried")
    assert {v["version"]: v["state"] for v in rollout.status()["versions"]}[v3] == "rolled_back"
    assert store.aliases() == {"champion": v1}
    rollout.close()


def test_a_promote_interrupted_between_alias_moves_is_completed_by_a_retry(tracked, tiny_policy_dir):
    store, rollout = ModelStore(tracked), Rollout(tracked)
    v1, v2 = (store.register(tiny_policy_dir).version for _ in range(2))
    rollout.crown(v1)
    rollout.start_canary(v2, fraction=0.25)
    # the learner was killed after moving the champion alias, before clearing the canary and the states
    store.set_alias("previous", v1)
    store.set_alias("champion", v2)

    event = rollout.promote(v2, "canary analysis: retried")
    assert event.state == "champion" and store.aliases() == {"champion": v2, "previous": v1}
    states = {v["version"]: v["state"] for v in rollout.status()["versions"]}
    assert states == {v1: "retired", v2: "champion"}
    rollout.promote(v2, "canary analysis: retried again")  # a second retry only re-announces
    assert [(e.version, e.state) for e in rollout.history()] == [
        (v1, "champion"),
        (v2, "canary"),
        (v1, "retired"),
        (v2, "champion"),
    ]
    assert [(e.version, e.state) for e in _rollout_events(tracked)][-3:] == [(v1, "retired"), (v2, "champion")] + [
        (v2, "champion")
    ]
    rollout.close()


def test_two_learners_starting_two_canaries_at_once_start_exactly_one(tracked, tiny_policy_dir):
    store = ModelStore(tracked)
    champion, a, b = (store.register(tiny_policy_dir).version for _ in range(3))
    Rollout(tracked).crown(champion)
    together, outcomes = threading.Barrier(2), {}

    def learner(version: str) -> None:
        rollout = Rollout(tracked)  # each learner its own clients, as in its own process
        together.wait()
        try:
            rollout.start_canary(version, 0.25)
            outcomes[version] = "started"
        except RolloutError as e:
            outcomes[version] = str(e)
        finally:
            rollout.close()

    threads = [threading.Thread(target=learner, args=(v,)) for v in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    started = [v for v, outcome in outcomes.items() if outcome == "started"]
    assert len(started) == 1, outcomes
    (loser,) = {a, b} - set(started)
    assert "already in canary" in outcomes[loser]
    assert store.by_alias("canary").version == started[0]
    assert [v.version for v in store.versions() if v.tags.get("rollout_state") == "canary"] == started


def test_a_lease_whose_holder_died_is_taken_over_when_it_expires_and_only_then(tracked):
    model = tracked.registry.model_name
    dead = RolloutLease(tracked, model, ttl_s=3)
    dead.acquire()  # and never released: a learner killed with SIGKILL mid-transition
    with pytest.raises(RolloutBusy, match=dead.holder):
        RolloutLease(tracked, model, wait_s=0.5).acquire()
    successor = RolloutLease(tracked, model, wait_s=20)
    successor.acquire()  # waits out the dead holder's lease, then takes it over
    dead.release()  # the late holder comes back: its release must not free the successor's lease
    with pytest.raises(RolloutBusy, match=successor.holder):
        RolloutLease(tracked, model, wait_s=0.5).acquire()
    successor.release()
    RolloutLease(tracked, model, wait_s=0.5).acquire()  # released: free at once
