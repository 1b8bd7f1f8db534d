"""The dashboard on the real stack, driven in headless Chromium: a fleet with a champion and a
canary has run real episodes, the learner has indexed them (and dead-lettered a malformed one),
and every view shows that data; the episode browser plays the robot's videos. A screenshot of
each view is saved in out/dashboard-screenshots/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from benchmarks.browser import chromium, open_view
from benchmarks.dashboard import READY
from dashboard.app import DashboardServer
from dashboard.sources import read_flow_runs
from infra.clients import kafka_producer, s3_client, use_prefect
from infra.contracts.episode import Episode
from learner.episode_index import EpisodeIndex
from learner.ingest import EpisodeIngestor
from tests.integration.test_fleet_agents import _fleet_with_a_canary
from tests.integration.test_improvement_round import publish_expert_episodes

pytestmark = pytest.mark.integration
SCREENSHOTS = Path("out/dashboard-screenshots")


@pytest.fixture
def fleet_history(tracked, tiny_policy_dir):
    """Real episodes of a champion and a canary, three expert successes, one malformed message."""
    rollout, champion, canary, fleet = _fleet_with_a_canary(tracked, tiny_policy_dir)
    fleet.run(episodes=2)
    assert fleet.close(drain_timeout=60)
    rollout.close()
    publish_expert_episodes(tracked, 3)
    producer = kafka_producer(tracked)
    producer.send(tracked.kafka.episodes_topic, key=b"robot-x", value=b"{not an episode")
    producer.flush(10)
    producer.close()
    index = EpisodeIndex(tracked.index_path)
    ingestor = EpisodeIngestor(tracked, index)
    stats = ingestor.run(idle_timeout_s=5)
    ingestor.close()
    assert stats.dead_lettered == 1
    episodes = index.query()
    index.close()
    return tracked, champion, canary, episodes


def _plot_data(driver, graph_id: str) -> list[dict]:
    return driver.execute_script(
        f"return document.querySelector('#{graph_id} .js-plotly-plot').data.map(t => ({{name: t.name, x: t.x, y: t.y, text: t.text, customdata: t.customdata}}))"
    )


def _text(driver, selector: str) -> str:
    """An element's text, read in one script: a refresh that redraws it between a find and a read
    would make the element stale. '' while there is no such element."""
    return driver.execute_script(f"const e = document.querySelector({selector!r}); return e ? e.innerText : ''")


def _rows(driver, table_id: str) -> list[list[str]]:
    """The table's cells as text, read in one script so a redraw cannot interleave."""
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{table_id} tr'))"
        ".map(r => Array.from(r.querySelectorAll('td.dash-cell')).map(c => c.innerText.trim())).filter(r => r.length)"
    )


def _wait_for_readings(server: DashboardServer, telemetry_episodes: int, timeout_s: float = 60) -> None:
    """Until the background readers have MLflow's registry and all of Kafka's telemetry and dead letters."""
    src, deadline = server.sources, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kafka = src.kafka.snapshot.value
        if src.registry.snapshot.value and kafka and len(kafka.episodes) >= telemetry_episodes and kafka.dead_letters:
            return
        time.sleep(0.2)
    raise AssertionError(f"no full reading in {timeout_s} s: {src.registry.snapshot.error}; {src.kafka.snapshot.error}")


def test_every_view_shows_the_fleet_and_the_browser_plays_its_videos(fleet_history):
    settings, champion, canary, episodes = fleet_history
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    server = DashboardServer(settings, port=0, refresh_s=3600).start()  # no redraw under the test's reads
    _wait_for_readings(server, sum(e.robot_id != "expert" for e in episodes))  # experts publish no telemetry
    driver = chromium()
    try:
        driver.get(server.url)
        by_version = {v: [e for e in episodes if e.model_versions.policy == v] for v in (champion, canary)}

        open_view(driver, server.url, "fleet", READY["fleet"])
        # the page's own partial Plotly.js, not the full one Dash would fetch (dashboard/plotly_bundle.py)
        scripts = driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert any("plotly-cartesian.min.js" in s for s in scripts), scripts
        assert not any("plotly.min.js" in s for s in scripts), scripts
        traces = {t["name"]: t for t in _plot_data(driver, "success-timeline")}
        assert {f"version {champion}", f"version {canary}"} <= set(traces)
        for version, mine in by_version.items():
            assert sum(n for n, _ in traces[f"version {version}"]["customdata"]) == len(mine)
        assert _text(driver, ".kpi-value") == str(len(episodes))
        driver.save_screenshot(str(SCREENSHOTS / "fleet.png"))

        open_view(driver, server.url, "rollout", "#canary-chart .main-svg")
        bars = {t["name"]: t["text"][0] for t in _plot_data(driver, "canary-chart")}
        finished = {
            v: sum(1 for e in mine if {d.policy_version for d in e.decisions} == {v}) for v, mine in by_version.items()
        }
        assert bars["canary"].endswith(f"/{finished[canary]}") and bars["champion"].endswith(f"/{finished[champion]}")
        assert _text(driver, "#canary-verdict").startswith("verdict: ")
        versions = {row[0]: row for row in _rows(driver, "versions-table")}
        assert versions[canary][1] == "canary" and versions[champion][1] == "champion"
        driver.save_screenshot(str(SCREENSHOTS / "rollout.png"))

        open_view(driver, server.url, "robots", READY["robots"])
        robots = {row[0]: row for row in _rows(driver, "robot-table")}
        assert set(robots) == {e.robot_id for e in episodes}
        assert robots["expert"][1:3] == ["3", "100%"]
        assert len(_rows(driver, "task-table")) == len({e.task_id for e in episodes})
        driver.save_screenshot(str(SCREENSHOTS / "robots_and_tasks.png"))

        open_view(driver, server.url, "health", READY["health"])
        dead = _plot_data(driver, "dead-letter-chart")[0]
        assert sum(dead["y"]) == 1 and dead["x"][0] == "bad_json"
        assert {t["name"] for t in _plot_data(driver, "latency-chart")} == {"p50", "p95", "p99"}
        driver.save_screenshot(str(SCREENSHOTS / "health.png"))

        open_view(driver, server.url, "episodes", "#video-executed")
        assert len(_rows(driver, "episode-table")) == min(len(episodes), 10)  # the first page
        playing = driver.execute_script("""
            const videos = Array.from(document.querySelectorAll('video'));
            return new Promise(done => setTimeout(() => done(videos.map(v => ({
                src: v.src, ready: v.readyState, time: v.currentTime, error: v.error && v.error.code}))), 3000));""")
        assert {v["src"].rsplit("/", 1)[-1] for v in playing} >= {"imagined.webm", "executed.webm", "d0c0.webm"}
        assert all(v["error"] is None and v["ready"] >= 2 and v["time"] > 0 for v in playing), playing
        driver.save_screenshot(str(SCREENSHOTS / "episode_browser.png"))

        driver.find_element(By.CSS_SELECTOR, "#decision-slider [role=slider]").send_keys(Keys.ARROW_RIGHT)
        WebDriverWait(driver, 20).until(lambda d: _text(d, "#candidates").startswith("decision 1 at step"))
    finally:
        driver.quit()
        server.stop()


def test_an_episode_whose_media_are_gone_gets_a_message_not_a_stack_trace(fleet_history):
    settings, _, _, episodes = fleet_history
    gone: Episode = episodes[0]
    s3_client(settings).remove_object(gone.media.bucket, gone.media.key)
    server = DashboardServer(settings, port=0).start()
    driver = chromium()
    try:
        driver.get(f"{server.url}/media/{gone.episode_id}/executed.webm")
        assert "missing_object" in driver.page_source and str(gone.episode_id) in driver.page_source
        from dashboard import views

        page = views.episode_detail(server.sources, server.media, str(gone.episode_id))
        assert "cannot be shown: missing_object" in page[0].children
    finally:
        driver.quit()
        server.stop()


def test_a_missing_service_is_named_on_the_page(tracked, tmp_path):
    settings = tracked.model_copy(
        update={"mlflow": tracked.mlflow.model_copy(update={"tracking_uri": "http://127.0.0.1:9"})}
    )
    EpisodeIndex(settings.index_path).close()
    server = DashboardServer(settings, port=0, refresh_s=2).start()
    driver = chromium()
    try:
        open_view(driver, server.url, "rollout", ".notice")
        WebDriverWait(driver, 90).until(lambda d: "did not answer" in _text(d, "#view"))
        assert "mlflow at http://127.0.0.1:9 did not answer" in _text(driver, "#view")
        assert "Traceback" not in driver.page_source
        open_view(driver, server.url, "fleet", ".notice")
        assert "No episodes in the index yet" in _text(driver, ".notice")
        driver.save_screenshot(str(SCREENSHOTS / "missing_service_and_empty_fleet.png"))
    finally:
        driver.quit()
        server.stop()


def test_the_flow_runs_listed_are_this_models_own(tracked):
    use_prefect(tracked)
    from prefect import flow, tags

    @flow(name="dashboard-test-round")
    def a_round() -> None:
        pass

    @flow(name="dashboard-test-loop")
    def a_loop() -> None:
        a_round()

    with tags(tracked.registry.flow_run_tag):
        mine = a_loop(return_state=True).state_details.flow_run_id
    with tags("model:another-fleets-policy"):
        a_loop()
    runs = read_flow_runs(tracked)
    assert sorted(run["flow"] for run in runs) == ["dashboard-test-loop", "dashboard-test-round"]  # the subflow too
    assert str(mine) in {run["id"] for run in runs}
