"""`fleet bench dashboard`: how long each view takes to load with a large episode index.

It fills a fresh index with N synthetic episodes (50 robots, 8 versions, a week of history),
gives the dashboard a Kafka reading of 50,000 episode summaries (what its telemetry tail keeps)
and a registry of those versions with their rollout histories, then loads every view in headless
Chromium, `repeats` times each, from the click to the view drawn. The same views are also timed
on the server alone (the query and the figure, serialised), which says where the time goes.
Services are not needed: what it measures is the index, the views and the browser.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import plotly

from benchmarks import BenchResult
from dashboard import views
from dashboard.app import TABS, DashboardServer
from dashboard.sources import EpisodeSummary, KafkaView, Poller, Sources, VersionInfo
from infra.contracts.dead_letter import DeadLetterReason
from infra.settings import Settings
from learner.episode_index import EpisodeIndex, IndexReader, Provenance
from sim.synthetic import synthetic_history

READY = {
    "fleet": "#success-timeline .main-svg",
    "rollout": "#versions-table",
    "robots": "#task-table",
    "health": "#dead-letter-chart .main-svg",
    "episodes": "#episode-table",
}
VERSIONS, ROBOTS, SPAN_S = 8, 50, 7 * 86400


def fill_index(path: Path, episodes: int, progress=None) -> KafkaView:
    """The index, and the Kafka reading those episodes' telemetry would give."""
    view = KafkaView(
        dead_letters=Counter({DeadLetterReason.schema.value: 12, DeadLetterReason.checksum_mismatch.value: 3})
    )
    with EpisodeIndex(path) as index:
        _fill(index, view, episodes, progress)
    return view


def _fill(index: EpisodeIndex, view: KafkaView, episodes: int, progress) -> None:
    batch = []
    for i, ep in enumerate(synthetic_history(0, episodes, ROBOTS, VERSIONS, SPAN_S), 1):
        batch.append((ep, Provenance("bench", 0, i, ep.published_at.timestamp() + 0.3)))
        rejected = sum(c.rejected for d in ep.decisions for c in d.candidates)
        view.episodes.append(
            EpisodeSummary(
                ep.ended_at.timestamp(),
                ep.model_versions.policy,
                ep.success,
                110.0,
                180.0,
                rejected,
                sum(len(d.candidates) for d in ep.decisions),
            )
        )
        view.heartbeats[ep.robot_id] = {
            "robot_id": ep.robot_id,
            "policy_version": ep.model_versions.policy,
            "at": datetime.now(UTC).isoformat(),
        }
        if len(batch) == 5000 or i == episodes:
            index.record(batch)
            batch = []
            if progress:
                progress(i)


def registry_reading() -> dict:
    now = datetime.now(UTC)
    versions = []
    for v in range(1, VERSIONS + 1):
        at = now - timedelta(seconds=SPAN_S * (1 - (v - 1) / VERSIONS))
        history = [
            {"state": "canary", "at": at.isoformat(timespec="seconds"), "reason": "candidate from the learner"},
            {
                "state": "champion",
                "at": (at + timedelta(hours=1)).isoformat(timespec="seconds"),
                "reason": "canary analysis",
            },
        ]
        analysis = {
            "decision": "promote",
            "canary_successes": 30,
            "canary_episodes": 60,
            "champion_successes": 28,
            "champion_episodes": 60,
        }
        versions.append(
            VersionInfo(
                str(v),
                "champion" if v == VERSIONS else "retired",
                ("champion",) if v == VERSIONS else (),
                history,
                {"parent_version": str(v - 1), "canary_analysis": json.dumps(analysis)},
            )
        )
    return {"aliases": {"champion": str(VERSIONS)}, "versions": versions}


class DashboardBench(BenchResult):
    episodes: int
    robots: int
    versions: int
    telemetry_episodes: int
    index_fill_s: float
    repeats: int
    view_load_s_max: dict[str, float]
    view_load_s_median: dict[str, float]
    server_view_ms_median: dict[str, float]
    target_s: float
    all_under_target: bool


def bench_dashboard(episodes: int, work: Path, repeats: int = 3, progress=None) -> DashboardBench:
    settings = Settings().isolated("bench-dashboard", work)
    settings.index_path.unlink(missing_ok=True)
    t = time.perf_counter()
    kafka = fill_index(settings.index_path, episodes, progress)
    fill_s = time.perf_counter() - t
    src = Sources(
        settings,
        IndexReader(settings.index_path),
        Poller.reading("kafka", kafka),
        Poller.reading("mlflow", registry_reading()),
        Poller.reading("prefect", []),
    )
    server_ms = {}
    for tab in TABS:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            plotly.io.json.to_json_plotly(views.VIEWS[tab](src))
            times.append((time.perf_counter() - t) * 1000)
        server_ms[tab] = round(float(np.median(times)), 1)

    from benchmarks.browser import chromium, open_view

    server = DashboardServer(settings, port=0, refresh_s=3600, sources=src).start()
    driver = chromium()
    browser_s: dict[str, list[float]] = {tab: [] for tab in TABS}
    try:
        for _ in range(repeats):
            driver.get("about:blank")
            for tab in TABS:
                browser_s[tab].append(round(open_view(driver, server.url, tab, READY[tab]), 3))
    finally:
        driver.quit()
        server.stop()
    return DashboardBench(
        episodes=src.index.count(),
        robots=ROBOTS,
        versions=VERSIONS,
        telemetry_episodes=len(kafka.episodes),
        index_fill_s=round(fill_s, 1),
        repeats=repeats,
        view_load_s_max={tab: max(v) for tab, v in browser_s.items()},
        view_load_s_median={tab: float(np.median(v)) for tab, v in browser_s.items()},
        server_view_ms_median=server_ms,
        target_s=2.0,
        all_under_target=all(max(v) < 2.0 for v in browser_s.values()),
    )
