"""Prometheus metrics of an agent process, served on 127.0.0.1 when a port is configured."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EPISODES = Counter("fleet_episodes_total", "finished episodes", ["robot", "version", "success"])
DECISION_SECONDS = Histogram(
    "fleet_decision_seconds",
    "time a robot waits for one plan-and-act decision",
    ["version"],
    buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
CANDIDATES = Counter("fleet_candidates_total", "imagined candidates", ["version"])
REJECTIONS = Counter("fleet_rejections_total", "rejected candidates", ["version", "reason"])
MODEL = Gauge("fleet_robot_model_version", "the version each robot runs (the value is the version number)", ["robot"])
SWAPS = Counter("fleet_model_swaps_total", "model swaps on rollout")
NOT_KEPT = Counter("fleet_episodes_not_kept_total", "finished episodes the spool refused (disk or cap full)", ["robot"])
QUARANTINED = Counter("fleet_spool_quarantined_total", "spooled episodes no retry could ship, set aside with a reason")
REFUSALS = Counter("fleet_model_refusals_total", "versions refused because their weights failed the sha256 check")


def serve(port: int, host: str = "127.0.0.1") -> None:
    start_http_server(port, addr=host)
