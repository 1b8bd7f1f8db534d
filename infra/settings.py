"""Typed platform configuration: one place for every endpoint, credential, topic and bucket.

Values come from, highest first: explicit arguments, environment variables with the ``FLEET_``
prefix (nested with ``__``, e.g. ``FLEET_KAFKA__BOOTSTRAP_SERVERS``), a TOML file (``fleet.toml``
in the working directory, or the path in ``FLEET_CONFIG``), then defaults.

An endpoint left unset means "use the embedded stack" that ``fleet stack up`` runs on loopback;
setting it points the platform at an external service (Apache Kafka, MinIO or S3, an MLflow
server, a Prefect server) and ``fleet stack up`` then starts nothing for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from infra.contracts import video

SERVICES = ("s3", "kafka", "mlflow", "prefect", "postgres")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default


Service = Literal["s3", "kafka", "mlflow", "prefect", "postgres"]


class StackSettings(_Section):
    """Where the embedded stack keeps its state and which loopback ports it binds."""

    state_dir: Path = Path(".fleet")
    host: str = "127.0.0.1"
    s3_port: int = 18333
    seaweed_master_port: int = 18334
    seaweed_volume_port: int = 18335
    seaweed_filer_port: int = 18336
    kafka_port: int = 19092
    mlflow_port: int = 15000
    prefect_port: int = 14200
    postgres_port: int = 15432
    start_timeout_s: float = 90.0


class KafkaSettings(_Section):
    bootstrap_servers: str | None = Field(None, description="host:port[,host:port]; unset = the embedded broker")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    episodes_topic: str = "fleet.episodes"
    dead_letter_topic: str = "fleet.episodes.dlq"
    rollouts_topic: str = Field("fleet.rollouts", description="rollout transitions, one event each")
    telemetry_topic: str = Field("fleet.telemetry", description="agents' heartbeats and episode summaries")
    partitions: int = 4
    replication_factor: int = 1
    consumer_group: str = "fleet-learner"
    bootstrap_timeout_ms: int = 10_000
    # Tansu and small clusters rebalance slowly with kafka-python's 45 s default (STACK.md).
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    producer_batch_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="bytes a producer gathers per partition into one request's batch (kafka-python's batch_size; "
        "its 16 KiB default holds six episode messages, and the embedded broker writes each batch as one S3 object)",
    )
    idempotent_producer: bool | None = Field(
        None,
        description="unset = on for an external broker, off for the embedded Tansu broker",
    )
    offset_gap_wait_s: float | None = Field(
        None,
        ge=0,
        description="how long the learner waits for a record missing between two it was given (infra/offset_gaps.py); "
        "unset = 10 s on the embedded Tansu broker, 0 (no check) on an external one",
    )
    time_index: bool | None = Field(
        None,
        description="does the broker find offsets by time (ListOffsets with a timestamp)? "
        "unset = yes for an external broker, no for the embedded Tansu broker",
    )
    fetch_max_wait_ms: int | None = Field(
        None,
        ge=0,
        description="how long a fetch may wait at the broker for records; "
        "unset = Kafka's 500 ms on an external broker, 100 ms on the embedded Tansu broker",
    )

    def broker_finds_offsets_by_time(self) -> bool:
        # Tansu 0.6 answers a ListOffsets by timestamp with offset 0 whatever the time asked
        # (probed: four records an hour apart, every query answered 0), so a reader that trusts it
        # reads the topic from the beginning.
        return self._unless_set(self.time_index, external=True, embedded=False)

    def fetch_wait_ms(self) -> int:
        # Apache Kafka answers a waiting fetch as soon as records arrive, so its wait costs no
        # latency. Tansu answered later: at 100 messages/s a record reached a consumer in p50 148
        # ms, p99 315 ms with a 500 ms wait, 42 and 103-107 ms with 100 ms (README, Benchmarks).
        return self._unless_set(self.fetch_max_wait_ms, external=500, embedded=100)

    def offset_gap_wait(self) -> float:
        # Apache Kafka gives a topic without transactions or compaction gapless offsets; Tansu's
        # object-store engine can publish a batch after the one behind it (infra/offset_gaps.py).
        return self._unless_set(self.offset_gap_wait_s, external=0.0, embedded=10.0)

    def producer_is_idempotent(self) -> bool:
        # Tansu's object-store engine commits a producer's new sequence number before it writes
        # the batch (dynostore.rs, produce), so a broker killed in between answers the retry
        # DuplicateSequenceNumber, which clients count as delivered: the episode is lost. Without
        # idempotence a retry can only duplicate, and the learner drops duplicates by episode_id.
        return self._unless_set(self.idempotent_producer, external=True, embedded=False)

    def _unless_set(self, chosen, *, external, embedded):
        """The operator's choice, else what suits the broker: an external one or the embedded Tansu."""
        if chosen is not None:
            return chosen
        return external if self.bootstrap_servers is not None else embedded


class S3Settings(_Section):
    endpoint: str | None = Field(None, description="http(s)://host:port; unset = embedded S3")
    access_key: SecretStr | None = Field(None, description="unset with the embedded S3 = the key it generated")
    secret_key: SecretStr | None = None
    region: str = "us-east-1"
    episodes_bucket: str = "fleet-episodes"
    mlflow_bucket: str = "fleet-mlflow"
    kafka_bucket: str = Field("fleet-kafka", description="where the embedded broker keeps topics")


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(None, description="unset = the embedded MLflow server")
    # HTTP basic auth against a server running MLflow's basic-auth app. With the embedded server,
    # setting both starts it with that app and these as its admin.
    username: str | None = Field(None, description="MLflow login; unset = no authentication")
    password: SecretStr | None = Field(None, description="MLflow password, with username")
    # Production runs MLflow on PostgreSQL; the embedded server can too (SQLAlchemy's psycopg driver).
    backend_store_uri: SecretStr | None = Field(
        None,
        description="the embedded MLflow server's store, e.g. postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB; "
        "unset = SQLite in state_dir",
    )

    @property
    def authenticated(self) -> bool:
        return self.username is not None and self.password is not None


class RegistrySettings(_Section):
    model_name: str = Field("worldfleet-policy", description="the MLflow registered model of the policy")
    experiment: str = Field("worldfleet", description="the MLflow experiment that holds registration runs")
    cache_dir: Path | None = Field(None, description="downloaded versions; unset = in state_dir")
    signing_key_file: Path | None = Field(
        None,
        description="the learner's Ed25519 key (PEM) that signs every version; unset = in state_dir, made on first use",
    )
    verify_key: str | None = Field(
        None,
        description="robots: the learner's public key (base64, `fleet rollout public-key`); unset = from signing_key_file",
    )

    @property
    def flow_run_tag(self) -> str:
        """The Prefect tag on every flow run about this model, so its runs can be listed apart."""
        return f"model:{self.model_name}"


class PrefectSettings(_Section):
    api_url: str | None = Field(None, description="unset = the embedded Prefect server")
    # Production runs Prefect on PostgreSQL; the embedded server can too (SQLAlchemy's asyncpg driver).
    database_url: SecretStr | None = Field(
        None,
        description="the embedded Prefect server's database, e.g. postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB; "
        "unset = SQLite in state_dir",
    )


class LearnerSettings(_Section):
    index_path: Path | None = Field(None, description="SQLite episode index; unset = in state_dir")
    # PostgreSQL when several learners share one index, or the index outgrows a file on one machine.
    index_url: SecretStr | None = Field(
        None,
        description="postgresql://USER:PASSWORD@HOST:PORT/DB for a PostgreSQL index; 'embedded' = the stack's "
        "own PostgreSQL; unset = the SQLite file index_path",
    )
    index_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="PostgreSQL schema")
    fetch_workers: int = 8
    # Caps on one episode's media, as stored and as decoded: past them the message is dead-lettered
    # (too_large) rather than read, so that no robot can make the learner or dashboard run out of memory.
    max_media_bytes: int = Field(256 << 20, ge=1)
    max_decoded_bytes: int = Field(1 << 30, ge=1)


class AgentSettings(_Section):
    spool_dir: Path | None = Field(None, description="on-disk spool; unset = in state_dir")
    upload_workers: int = 8
    batch_size: int = 64
    # A shipment of fewer than batch_size entries waits until its oldest has been spooled this long,
    # for more to join it (Kafka's linger.ms): a shipper that keeps catching up with the robot
    # otherwise ships one episode per object and spends its time per request (README).
    ship_linger_ms: int = Field(
        100, ge=0, description="how long a part-full shipment waits for more; 0 = ships at once"
    )
    # A backlog ships as one object per robot and shipment, up to this many bytes, instead of one
    # object per episode: S3 servers spend their time per request, not per byte (README). 0 = never pack.
    pack_max_bytes: int = Field(8 << 20, ge=0, description="media of one robot's episodes per S3 object; 0 = one each")
    # Back-pressure: past this many bytes waiting on the robot's disk, publish waits for the shipper
    # up to spool_full_wait_s, then refuses the episode (SpoolFull) instead of filling the disk.
    spool_max_bytes: int = Field(8 << 30, ge=1)
    spool_full_wait_s: float = Field(30.0, ge=0)
    # zstd level 1: 5x faster than level 3 on camera frames for ~5% more bytes (see README).
    compression_level: int = 1
    # Camera frames as H.264 (lossy, at video_crf) instead of exactly: 20x fewer bytes on a real
    # camera's noisy frames, 3x more on the simulator's noise-free renders (README, "Frames as video").
    media_codec: Literal["zstd", "h264"] = Field("zstd", description="how frames travel: exactly (zstd) or as H.264")
    video_crf: int = Field(video.DEFAULT_CRF, ge=0, le=51, description="H.264 quality: lower is closer and bigger")
    heartbeat_interval_s: float = 5.0
    # Rollout events make swaps fast; this poll of the registry only catches a missed event.
    registry_poll_s: float = 30.0
    metrics_port: int | None = Field(None, description="Prometheus metrics on 127.0.0.1:PORT; unset = off")


class DashboardSettings(_Section):
    # HTTP basic auth: put TLS in front of it (a reverse proxy) anywhere but a trusted network.
    user: str = Field("fleet", description="the dashboard's login name")
    password: SecretStr | None = Field(
        None, description="the dashboard's login password; unset = no login, and only a loopback bind is allowed"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEET_", env_nested_delimiter="__", extra="forbid", toml_file="fleet.toml"
    )

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    s3: S3Settings = S3Settings()
    mlflow: MlflowSettings = MlflowSettings()
    registry: RegistrySettings = RegistrySettings()
    prefect: PrefectSettings = PrefectSettings()
    learner: LearnerSettings = LearnerSettings()
    agent: AgentSettings = AgentSettings()
    dashboard: DashboardSettings = DashboardSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("FLEET_CONFIG", "fleet.toml"))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_path)
        return init_settings, env_settings, toml

    # -- which services the embedded stack provides ------------------------------------------
    def is_embedded(self, service: Service) -> bool:
        return {
            "s3": self.s3.endpoint is None,
            "kafka": self.kafka.bootstrap_servers is None,
            "mlflow": self.mlflow.tracking_uri is None,
            "prefect": self.prefect.api_url is None,
            "postgres": self.learner.index_url is not None and self.learner.index_url.get_secret_value() == "embedded",
        }[service]

    def uses(self, service: Service) -> bool:
        """PostgreSQL is in the platform only when the index is configured to it."""
        return service != "postgres" or self.learner.index_url is not None

    # -- resolved endpoints -------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.stack.state_dir.resolve()

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers or f"{self.stack.host}:{self.stack.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return self.s3.endpoint or f"http://{self.stack.host}:{self.stack.s3_port}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"http://{self.stack.host}:{self.stack.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return self.prefect.api_url or f"http://{self.stack.host}:{self.stack.prefect_port}/api"

    def endpoint(self, service: Service) -> str:
        return {
            "s3": self.s3_endpoint,
            "kafka": self.kafka_bootstrap,
            "mlflow": self.mlflow_tracking_uri,
            "prefect": self.prefect_api_url,
            "postgres": self.index_where,
        }[service]

    @property
    def index_url(self) -> str | None:
        """The PostgreSQL index's connection URL (the embedded server's, with its generated password),
        or None for the SQLite file."""
        if self.learner.index_url is None:
            return None
        if self.is_embedded("postgres"):
            user, password = self.embedded_postgres_login()
            return f"postgresql://{user}:{password}@{self.stack.host}:{self.stack.postgres_port}/postgres"
        return self.learner.index_url.get_secret_value()

    @property
    def index_where(self) -> str:
        """Where the index is, for messages: the path, or the URL without its password."""
        if self.learner.index_url is None:
            return str(self.index_path)
        if self.is_embedded("postgres"):
            return f"postgresql://{self.stack.host}:{self.stack.postgres_port}/postgres"
        url = urlsplit(self.learner.index_url.get_secret_value())
        host = url.hostname or ""
        return f"{url.scheme}://{host}{f':{url.port}' if url.port else ''}{url.path}"

    def embedded_postgres_login(self) -> tuple[str, str]:
        """The embedded PostgreSQL's user and password, generated by the stack when it first starts."""
        path = self.state_dir / "postgres" / "credentials.json"
        if not path.exists():
            return "fleet", ""
        creds = json.loads(path.read_text())
        return creds["user"], creds["password"]

    @property
    def index_path(self) -> Path:
        return self.learner.index_path or self.state_dir / "learner" / "episodes.sqlite"

    @property
    def model_cache_dir(self) -> Path:
        return self.registry.cache_dir or self.state_dir / "models"

    @property
    def signing_key_path(self) -> Path:
        return self.registry.signing_key_file or self.state_dir / "keys" / "registry-signing.pem"

    @property
    def spool_dir(self) -> Path:
        return self.agent.spool_dir or self.state_dir / "agent" / "spool"

    def isolated(self, name: str, work_dir: Path) -> Settings:
        """A copy with its own topics, consumer group, spool, index and registered model, on the
        same services. Benchmarks and tests use it so that runs cannot see each other's work.
        """
        return self.model_copy(
            update={
                "kafka": self.kafka.model_copy(
                    update={
                        "episodes_topic": f"{name}.episodes",
                        "dead_letter_topic": f"{name}.episodes.dlq",
                        "consumer_group": f"{name}.learner",
                        "rollouts_topic": f"{name}.rollouts",
                        "telemetry_topic": f"{name}.telemetry",
                    }
                ),
                "registry": self.registry.model_copy(
                    update={"model_name": f"{name}-policy", "cache_dir": work_dir / "models"}
                ),
                "agent": self.agent.model_copy(update={"spool_dir": work_dir / "spool"}),
                "learner": self.learner.model_copy(
                    update={"index_path": work_dir / "index.sqlite", "index_schema": _schema_name(name)}
                ),
            }
        )

    @property
    def generated_credentials_path(self) -> Path:
        return self.state_dir / "s3" / "credentials.json"

    def s3_credentials(self) -> tuple[str, str]:
        """Access and secret key: configured ones, else those the embedded S3 generated."""
        if self.s3.access_key and self.s3.secret_key:
            return self.s3.access_key.get_secret_value(), self.s3.secret_key.get_secret_value()
        if self.is_embedded("s3") and self.generated_credentials_path.exists():
            creds = json.loads(self.generated_credentials_path.read_text())
            return creds["access_key"], creds["secret_key"]
        raise RuntimeError(
            f"No S3 credentials: set FLEET_S3__ACCESS_KEY and FLEET_S3__SECRET_KEY for "
            f"{self.s3_endpoint}, or run `fleet stack up` to generate the embedded stack's."
        )


def _schema_name(name: str) -> str:
    """A PostgreSQL schema for an isolated run: its own tables on a shared server."""
    cleaned = "".join(c if c.isascii() and c.isalnum() else "_" for c in name.lower())
    return ("run_" + cleaned)[:63]
