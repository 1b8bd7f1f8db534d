"""The dashboard's views on a hand-built index: they show what is there, and a clear message
when there is nothing, or a service does not answer."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np

from dashboard import plotly_bundle, views
from dashboard.media import chosen_imagined
from dashboard.sources import EpisodeSummary, KafkaView, Poller, Sources
from infra.contracts.telemetry import EpisodeNotKept, EpisodeQuarantined, Heartbeat
from infra.settings import Settings
from infra.stats import wilson
from learner.episode_index import EpisodeIndex, IndexReader, Provenance
from registry.analysis import AnalysisConfig, Arm, analyse
from sim.synthetic import synthetic_history


def _sources(tmp_path, episodes=(), kafka=None, registry=None, registry_error=None) -> Sources:
    settings = Settings().isolated("dash", tmp_path)
    if episodes:
        with EpisodeIndex(settings.index_path) as index:
            index.record([(e, Provenance("t", 0, i, e.published_at.timestamp())) for i, e in enumerate(episodes)])
    return Sources(
        settings,
        IndexReader(settings.index_path),
        Poller.reading("kafka", kafka or KafkaView()),
        Poller.reading("mlflow", registry, registry_error),
        Poller.reading("prefect", []),
    )


def _text(component) -> str:
    """Every piece of text a person would read in these components."""
    if isinstance(component, str):
        return component
    if isinstance(component, list):
        return " ".join(_text(c) for c in component)
    return _text(getattr(component, "children", None) or "")


def _find(component, component_id: str):
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children] if children is not None else []:
        if (found := _find(child, component_id)) is not None:
            return found
    return None


def test_an_empty_fleet_says_how_to_start_one_in_every_view(tmp_path):
    src = _sources(tmp_path)
    assert "no episode index at" in _text(views.fleet(src))
    EpisodeIndex(src.settings.index_path).close()  # the learner has started, nothing has arrived
    for view in (views.fleet, views.robots_tasks, views.episodes):
        assert "No episodes in the index yet" in _text(view(src))


def test_the_timeline_counts_every_episode_under_its_version(tmp_path):
    history = list(synthetic_history(0, 900, robots=6, versions=3, span_s=3600))
    page = views.fleet(_sources(tmp_path, history))
    figure = _find(page[-2], "success-timeline").figure
    for trace in figure.data:
        version = trace.name.removeprefix("version ")
        mine = [e for e in history if e.model_versions.policy == version]
        assert sum(n for n, _ in trace.customdata) == len(mine)
        assert sum(wins for _, wins in trace.customdata) == sum(e.success for e in mine)
    assert {t.name for t in figure.data} == {"version 1", "version 2", "version 3"}


def test_the_learning_curve_shows_each_version_s_success_with_its_interval_in_version_order(tmp_path):
    history = list(synthetic_history(2, 600, robots=4, versions=3, span_s=1800))
    curve = _find(views.fleet(_sources(tmp_path, history))[-1], "learning-curve").figure.data[0]
    assert list(curve.x) == ["v1", "v2", "v3"]
    for version, rate, (n, wins, _), above in zip("123", curve.y, curve.customdata, curve.error_y.array, strict=True):
        mine = [e for e in history if e.model_versions.policy == version]
        assert (n, wins) == (len(mine), sum(e.success for e in mine))
        assert rate == wins / n and above == wilson(wins, n)[1] - rate


def test_robot_and_task_tables_hold_one_row_per_robot_and_task_with_their_success(tmp_path):
    history = list(synthetic_history(1, 300, robots=5, versions=2, span_s=600))
    page = views.robots_tasks(_sources(tmp_path, history))
    robots = {row["robot"]: row for row in _find(page[1], "robot-table").data}
    assert set(robots) == {f"robot-{i:03d}" for i in range(5)}
    mine = [e for e in history if e.robot_id == "robot-002"]
    assert robots["robot-002"]["episodes"] == len(mine)
    assert robots["robot-002"]["success"] == round(sum(e.success for e in mine) / len(mine), 3)
    assert robots["robot-002"]["model version"] == mine[-1].model_versions.policy  # the latest episode's
    assert len(_find(page[3], "task-table").data) == len({e.task_id for e in history})


def test_a_missing_service_is_named_in_the_view_not_raised(tmp_path):
    down = (
        "mlflow at http://127.0.0.1:9 did not answer (list versions: connection refused); is `fleet stack up` running?"
    )
    src = _sources(tmp_path, registry_error=down)
    assert down in _text(views.rollout(src))


def test_the_live_canary_verdict_is_the_analysis_of_its_telemetry(tmp_path):
    from dashboard.sources import VersionInfo

    started = time.time() - 60
    history = [
        {"state": "canary", "at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)), "reason": "test"}
    ]
    registry = {
        "aliases": {"champion": "1", "canary": "2"},
        "versions": [
            VersionInfo("1", "champion", ("champion",), [], {}),
            VersionInfo("2", "canary", ("canary",), history, {}),
        ],
    }
    kafka = KafkaView()
    for i in range(40):  # canary 5/20, champion 15/20; and older episodes that must not count
        success = (i % 2 == 0 and i < 30) or i % 8 == 1
        kafka.episodes.append(EpisodeSummary(started + 1 + i, "2" if i % 2 else "1", success, 100.0, 150.0, 0, 8))
        kafka.episodes.append(EpisodeSummary(started - 100, "2", True, 100.0, 150.0, 0, 8))
    page = views.rollout(_sources(tmp_path, kafka=kafka, registry=registry))
    canary, champion = Arm(5, 20), Arm(15, 20)
    expected = analyse(canary, champion, AnalysisConfig()).decision
    assert _find(page[0], "canary-verdict").children == f"verdict: {expected}"
    bars = {t.name: t.text[0] for t in _find(page[0], "canary-chart").figure.data}
    assert bars == {"canary": "5/20", "champion": "15/20"}


def test_the_chosen_imagined_video_lines_up_with_the_executed_steps(tmp_path):
    episode = next(synthetic_history(2, 1, robots=1, versions=1, span_s=1))  # 24 steps, 4 decisions of 4 candidates
    imagined = np.zeros((4, 4, 8, 8, 8, 3), np.uint8)
    for d, decision in enumerate(episode.decisions):
        if decision.chosen is not None:
            imagined[d, decision.chosen] = 10 * (d + 1)
    frames = chosen_imagined(episode, imagined)
    assert len(frames) == len(episode.actions)
    for d, decision in enumerate(episode.decisions):
        if decision.chosen is not None:
            assert (frames[decision.step] == 10 * (d + 1)).all()


def test_episodes_lost_on_robots_are_counted_by_kind_in_the_health_view(tmp_path):
    from dashboard.sources import KafkaTail

    tail = KafkaTail(Settings().isolated("dash", tmp_path))
    full = "the disk under spool /s is full"
    lost = [
        EpisodeNotKept(robot_id="robot-001", episode_id=uuid.uuid4(), reason=full),
        EpisodeQuarantined(robot_id="robot-001", reason="unreadable"),
        EpisodeNotKept(robot_id="robot-001", episode_id=uuid.uuid4(), reason=full),
    ]
    tail.take(telemetry_records(tail, [m.model_dump_json().encode() for m in lost]))
    text = _text(views.health(_sources(tmp_path, kafka=tail.view)))
    assert "2 episodes not kept (robot's spool full), 1 quarantined on robots" in text
    assert "latest: robot-001: the disk under spool /s is full" in text


def test_a_scribbled_canary_analysis_tag_is_named_and_the_rest_of_the_rollout_view_still_shows(tmp_path):
    from dashboard.sources import VersionInfo

    recorded = {"decision": "kept", "canary_successes": 1, "canary_episodes": 60}
    recorded |= {"champion_successes": 3, "champion_episodes": 61}
    for scribbled in (
        "not json",
        json.dumps(recorded | {"canary_successes": "1"}),
        json.dumps(recorded | {"canary_successes": 61}),
    ):
        registry = {
            "aliases": {"champion": "1"},
            "versions": [
                VersionInfo("1", "champion", ("champion",), [], {"canary_analysis": json.dumps(recorded)}),
                VersionInfo("2", "kept", (), [], {"canary_analysis": scribbled}),
            ],
        }
        page = views.rollout(_sources(tmp_path, registry=registry))
        assert "Version 2's canary_analysis tag in MLflow is not a canary analysis" in _text(page)
        table = next(found for part in page if (found := _find(part, "versions-table")) is not None)
        assert [row["version"] for row in table.data] == ["2", "1"]
    registry["versions"][1] = VersionInfo("2", "kept", (), [], {"canary_analysis": json.dumps(recorded)})
    page = views.rollout(_sources(tmp_path, registry=registry))
    assert _find(page[0], "canary-verdict").children == "verdict: kept"


def telemetry_records(tail, values: list) -> list:
    from types import SimpleNamespace

    topic = tail.settings.kafka.telemetry_topic
    return [SimpleNamespace(topic=topic, partition=0, offset=i, value=v) for i, v in enumerate(values)]


def test_records_that_are_not_telemetry_are_counted_and_the_rest_of_the_poll_still_shows(tmp_path):
    # Before, the first of them ended the poll: every record polled after it was lost to the view.
    from dashboard.sources import KafkaTail

    tail = KafkaTail(Settings().isolated("dash", tmp_path))
    heartbeat = Heartbeat(robot_id="robot-007", policy_version="3", episodes=12).model_dump_json().encode()
    not_telemetry = [
        None,  # a tombstone
        b"{not json",
        b"[1, 2]",
        b'{"kind": "heartbeat"}',  # no robot_id: the health view would fail on it
        b'{"kind": ["heartbeat"]}',
        json.dumps({"kind": "episode_not_kept", "robot_id": "robot-001"}).encode(),
    ]
    newer_agent = b'{"kind": "battery", "robot_id": "robot-007"}'  # a kind this dashboard does not show
    tail.take(telemetry_records(tail, [*not_telemetry, newer_agent, heartbeat]))
    assert tail.view.unreadable == 6 and list(tail.view.heartbeats) == ["robot-007"]
    assert not tail.view.lost_on_robots
    text = _text(views.health(_sources(tmp_path, kafka=tail.view)))
    assert "6 records on the telemetry topic are not telemetry and were skipped" in text


def test_the_partial_plotly_bundle_is_the_version_dash_would_load():
    # a newer plotly package with an older partial bundle could draw figures the bundle cannot read
    assert plotly_bundle.shipped_version() == plotly_bundle.VERSION
