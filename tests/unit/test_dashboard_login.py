"""The dashboard shows everything the fleet does: off loopback, only behind a login."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pytest

from dashboard.app import DashboardServer
from dashboard.sources import KafkaView, Poller, Sources
from infra.errors import UsageError
from infra.settings import Settings
from learner.episode_index import EpisodeIndex, IndexReader


def _settings(tmp_path, password: str | None = None) -> Settings:
    settings = Settings(dashboard={"user": "ops", "password": password}).isolated("dash", tmp_path)
    EpisodeIndex(settings.index_path).close()
    return settings


def _sources(settings) -> Sources:
    return Sources(
        settings,
        IndexReader(settings.index_path),
        Poller.reading("kafka", KafkaView()),
        Poller.reading("mlflow", None),
        Poller.reading("prefect", []),
    )


def _status(url: str, login: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "dashboard.example.com"])
def test_a_bind_beyond_loopback_without_a_login_is_refused(tmp_path, host):
    settings = _settings(tmp_path)
    with pytest.raises(UsageError, match=f"will not serve {host} without a login") as e:
        DashboardServer(settings, host, 0, sources=_sources(settings))
    assert "FLEET_DASHBOARD__PASSWORD" in e.value.hint


def test_with_a_login_every_route_asks_for_it(tmp_path):
    settings = _settings(tmp_path, password="s3cret")
    server = DashboardServer(settings, "127.0.0.1", 0, sources=_sources(settings)).start()
    try:
        for path in ("/", "/_dash-layout", "/media/x/executed.webm"):
            assert _status(server.url + path) == 401
            assert _status(server.url + path, ("ops", "wrong")) == 401
            assert _status(server.url + path, ("someone", "s3cret")) == 401
        assert _status(server.url + "/", ("ops", "s3cret")) == 200
        assert _status(server.url + "/_dash-layout", ("ops", "s3cret")) == 200
    finally:
        server.stop()


def test_on_loopback_without_a_login_it_serves_as_before(tmp_path):
    settings = _settings(tmp_path)
    server = DashboardServer(settings, "127.0.0.1", 0, sources=_sources(settings)).start()
    try:
        assert _status(server.url + "/") == 200
    finally:
        server.stop()
