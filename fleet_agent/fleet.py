"""A fleet of simulated robots in one process: tasks from a stream, batched plan-and-act, every
finished episode published through the data plane, telemetry on Kafka.

All robots that run the same version decide together in one batch (one pass of each network for
the whole group), which is what keeps a process's cores busy. Models are swapped between
decisions when the rollout changes a robot's version, so no episode in flight is dropped; each
decision records the version that made it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import torch

from fleet_agent import metrics
from fleet_agent.config import FleetConfig
from fleet_agent.models import FleetModels
from fleet_agent.publisher import EpisodePublisher
from fleet_agent.spool import SpoolFull
from infra.clients import kafka_producer
from infra.contracts.episode import Decision, EpisodeCore, ModelVersions, SuccessSource
from infra.contracts.telemetry import EpisodeNotKept, EpisodeQuarantined, EpisodeTelemetry, Heartbeat, ModelRefused
from infra.errors import FleetError
from infra.settings import Settings
from sim.tabletop import TabletopConfig, TabletopEnv
from worldmodel.planner import Planner, PlanRequest

log = logging.getLogger(__name__)


class TaskStream:
    """Seeded task starts handed out in order: every episode of the process gets its own seed."""

    def __init__(self, first_seed: int):
        self._next = first_seed

    def next(self) -> int:
        self._next += 1
        return self._next - 1


@dataclass
class Robot:
    robot_id: str
    env: TabletopEnv
    version: str | None = None
    swapped_at: float | None = None  # when the alias change that gave it `version` happened
    episodes: int = 0
    # the episode in flight
    episode_id: uuid.UUID = field(default_factory=uuid.uuid4)
    obs: dict | None = None
    info: dict | None = None
    prev: np.ndarray | None = None
    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    imagined: list[np.ndarray] = field(default_factory=list)
    timings: Counter = field(default_factory=Counter)
    step: int = 0
    started_at: datetime | None = None
    pending: dict = field(default_factory=lambda: defaultdict(list))

    def start(self, seed: int) -> None:
        self.obs, self.info = self.env.reset(seed=seed)
        self.prev = self.obs["rgb"]
        self.episode_id, self.step, self.started_at = uuid.uuid4(), 0, datetime.now(UTC)
        self.frames, self.actions, self.decisions, self.imagined = [self.obs["rgb"]], [], [], []
        self.timings = Counter()
        self.pending.clear()


class FleetStopped(FleetError):
    hint = "the traceback above it in the log says where"


class Fleet:
    def __init__(
        self,
        settings: Settings,
        config: FleetConfig,
        models: FleetModels | None = None,
        publisher: EpisodePublisher | None = None,
    ):
        self.settings, self.config = settings, config
        ids = config.robot_ids()
        self._telemetry = kafka_producer(settings)
        self.models = models or FleetModels(settings, ids, on_refused=self._refused)
        self.publisher = publisher or EpisodePublisher(settings, on_quarantined=self._quarantined)
        self.tasks = TaskStream(config.seed)
        self.robots = [
            Robot(r, TabletopEnv(TabletopConfig(arm_turn_deg=config.arm_turn_deg), split=config.split)) for r in ids
        ]
        self.generator = torch.Generator().manual_seed(config.seed)
        self._planners: dict[str, Planner] = {}
        # From an alias change to the robot running the new version (its next decision will use
        # it), and to that first decision, which also waits for the robot's turn in the batch cycle.
        self.propagation_s: list[float] = []
        self.first_decision_s: list[float] = []
        self.finished: list[tuple[EpisodeCore, float]] = []  # every episode published, with its monotonic end time
        self.not_kept: list[uuid.UUID] = []  # finished, but refused by a full spool
        self._last_heartbeat = 0.0
        # Set, robots hold between decisions (episodes in flight wait, nothing is dropped) and keep
        # sending heartbeats: for a learner that shares the robots' cores, as in `fleet demo`.
        self.paused = threading.Event()
        self.failure: BaseException | None = None  # what ended `run_in_background` early

    # -- the loop -----------------------------------------------------------------------------
    def run_in_background(self, stop: threading.Event) -> threading.Thread:
        """`run` on a daemon thread until `stop`. A failure that ends it is logged and kept, so
        that whoever waits on the fleet's episodes raises it (`check_running`) instead of waiting
        for episodes that will never come."""

        def run() -> None:
            try:
                self.run(stop=stop)
            except BaseException as e:  # noqa: BLE001 - kept for the waiting thread to raise
                log.exception("the fleet stopped")
                self.failure = e

        thread = threading.Thread(target=run, daemon=True, name="fleet")
        thread.start()
        return thread

    def check_running(self) -> None:
        if self.failure is not None:
            raise FleetStopped(
                f"the simulated fleet stopped: {type(self.failure).__name__}: {self.failure}"
            ) from self.failure

    def run(
        self,
        episodes: int | None = None,
        duration_s: float | None = None,
        on_episode=None,
        stop: threading.Event | None = None,
    ) -> dict:
        """Run until `episodes` have finished, `duration_s` has passed, or `stop` is set."""
        self.models.start()
        stop = stop or threading.Event()
        started, finished = time.monotonic(), 0
        try:
            while (
                not stop.is_set()
                and (episodes is None or finished < episodes)
                and (duration_s is None or time.monotonic() - started < duration_s)
            ):
                if self.paused.is_set():
                    self._heartbeats()
                    stop.wait(0.2)
                    continue
                for core in self.tick():
                    finished += 1
                    if on_episode:
                        on_episode(core)
                self._heartbeats()
        finally:
            self.models.stop()
        return {"episodes": finished, "seconds": time.monotonic() - started}

    def tick(self) -> list[EpisodeCore]:
        """One decision for every robot, executed; returns the episodes that finished.

        Robots on the same version decide together, up to `batch_robots` at a time; rollout
        changes are applied before every batch, so a swap waits for one batch, not a whole tick."""
        for robot in self.robots:
            if robot.obs is None:
                robot.start(self.tasks.next())
        waiting, done = list(self.robots), []
        while waiting:
            self._apply_rollout()
            version = waiting[0].version
            batch = [r for r in waiting if r.version == version][: self.config.batch_robots]
            waiting = [r for r in waiting if r not in batch]
            done += self._decide_and_act(version, batch)
        return done

    def _decide_and_act(self, version: str, robots: list[Robot]) -> list[EpisodeCore]:
        requests = [PlanRequest(r.prev, r.obs["rgb"], r.info["instruction"], r.step, r.pending) for r in robots]
        for robot in robots:
            if robot.swapped_at is not None:
                self.first_decision_s.append(max(0.0, time.time() - robot.swapped_at))
                robot.swapped_at = None
        t = time.perf_counter()
        decisions = self._planner(version).decide_batch(requests, self.generator)
        waited = time.perf_counter() - t
        done = []
        for robot, decision in zip(robots, decisions, strict=True):
            metrics.DECISION_SECONDS.labels(version).observe(waited)
            record = decision.record(robot.step, version)
            record.latency_ms = waited * 1000  # what the robot waited, batch included
            robot.decisions.append(record)
            robot.imagined.append(decision.imagined[-self.config.planner.candidates :])
            robot.timings.update(decision.timings_ms)
            if (core := self._act(robot, decision.actions)) is not None:
                done.append(core)
        return done

    def _act(self, robot: Robot, actions: np.ndarray) -> EpisodeCore | None:
        for action in actions:
            robot.prev = robot.obs["rgb"]
            robot.obs, _, terminated, truncated, robot.info = robot.env.step(action)
            robot.frames.append(robot.obs["rgb"])
            robot.actions.append(np.asarray(action, np.float32))
            robot.step += 1
            if terminated or truncated:
                core = self._finish(robot)
                robot.start(self.tasks.next())
                return core
        return None

    # -- models -------------------------------------------------------------------------------
    def _planner(self, version: str) -> Planner:
        if version not in self._planners:
            self._planners = {v: p for v, p in self._planners.items() if v in {r.version for r in self.robots}}
            self._planners[version] = Planner(self.models.policy(version), self.config.planner)
        return self._planners[version]

    def _apply_rollout(self) -> None:
        for robot in self.robots:
            wanted = self.models.version_for(robot.robot_id)
            if wanted == robot.version:
                continue
            if robot.version is not None:
                metrics.SWAPS.inc()
                robot.swapped_at = self.models.changed_at(robot.robot_id)
                if robot.swapped_at is not None:
                    self.propagation_s.append(max(0.0, time.time() - robot.swapped_at))
            robot.version = wanted
            robot.pending.clear()  # the old model's plans do not belong in the new one's window
            metrics.MODEL.labels(robot.robot_id).set(float(wanted) if wanted.isdigit() else -1)

    # -- publishing ---------------------------------------------------------------------------
    def _finish(self, robot: Robot) -> EpisodeCore:
        versions = {d.policy_version for d in robot.decisions}
        version = robot.version if len(versions) <= 1 else robot.decisions[-1].policy_version
        rejections = Counter(c.rejection_reason for d in robot.decisions for c in d.candidates if c.rejected)
        core = EpisodeCore(
            episode_id=robot.episode_id,
            robot_id=robot.robot_id,
            model_versions=ModelVersions(policy=version, world_model=version, idm=version, critic=version),
            task_id=robot.info["task_id"],
            instruction=robot.info["instruction"],
            started_at=robot.started_at,
            ended_at=datetime.now(UTC),
            success=bool(robot.info["success"]),
            success_source=SuccessSource.environment,
            actions=np.stack(robot.actions).round(5).tolist(),
            decisions=robot.decisions,
            rejections=dict(rejections),
            timings_ms={k: round(v, 2) for k, v in robot.timings.items()},
            hindsight=robot.info.get("hindsight", {}),
        )
        kept = self._keep(core, robot)
        robot.episodes += 1
        telemetry = EpisodeTelemetry.of(core, policy_version=version if len(versions) <= 1 else "mixed")
        self._emit(robot.robot_id, telemetry)
        metrics.EPISODES.labels(robot.robot_id, version, str(core.success).lower()).inc()
        metrics.CANDIDATES.labels(version).inc(telemetry.candidates)
        for reason, count in rejections.items():
            metrics.REJECTIONS.labels(version, reason).inc(count)
        if kept:
            self.finished.append((core, time.monotonic()))
        return core

    def _keep(self, core: EpisodeCore, robot: Robot) -> bool:
        try:
            self.publisher.publish(core, np.stack(robot.frames), np.stack(robot.imagined))
            return True
        except SpoolFull as e:
            # The robots keep working: one episode is lost, said in the log, a metric and telemetry,
            # rather than every robot of the process stopping on a full disk.
            log.error("%s: episode %s not kept: %s", robot.robot_id, core.episode_id, e)
            metrics.NOT_KEPT.labels(robot.robot_id).inc()
            self.not_kept.append(core.episode_id)
            self._emit(
                robot.robot_id, EpisodeNotKept(robot_id=robot.robot_id, episode_id=core.episode_id, reason=str(e))
            )
            return False

    def _heartbeats(self) -> None:
        if time.monotonic() - self._last_heartbeat < self.settings.agent.heartbeat_interval_s:
            return
        self._last_heartbeat = time.monotonic()
        for robot in self.robots:
            self._emit(
                robot.robot_id,
                Heartbeat(robot_id=robot.robot_id, policy_version=robot.version, episodes=robot.episodes),
            )

    def _refused(self, version: str, reason: str, kept: str | None) -> None:
        metrics.REFUSALS.inc()
        self._emit("*", ModelRefused(robot_id="*", version=version, reason=reason, kept_version=kept))

    def _quarantined(self, robot_id: str, reason: str) -> None:
        self._emit(robot_id, EpisodeQuarantined(robot_id=robot_id, reason=reason))

    def _emit(self, key: str, message) -> None:
        # Telemetry is best effort: episodes themselves wait in the spool, a lost heartbeat does not matter.
        try:
            self._telemetry.send(
                self.settings.kafka.telemetry_topic, key=key.encode(), value=message.model_dump_json().encode()
            )
        except Exception as e:  # noqa: BLE001 - kafka-python raises several types for one cause
            log.warning("telemetry dropped: %s", e)

    def close(self, drain_timeout: float = 60.0) -> bool:
        drained = self.publisher.close(drain_timeout)
        self._telemetry.flush(timeout=10)
        self._telemetry.close(timeout=5)
        return drained
