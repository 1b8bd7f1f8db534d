import pytest

from infra.settings import Settings


def test_defaults_point_at_the_embedded_stack():
    s = Settings()
    assert all(s.is_embedded(name) for name in ("s3", "kafka", "mlflow", "prefect"))
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.prefect_api_url.endswith("/api")


def test_environment_points_a_service_elsewhere(monkeypatch):
    monkeypatch.setenv("FLEET_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("FLEET_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FLEET_S3__ENDPOINT", "https://minio.example:9000")
    s = Settings()
    assert s.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert not s.is_embedded("kafka") and not s.is_embedded("s3")
    assert s.is_embedded("mlflow")


def test_toml_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    config = tmp_path / "fleet.toml"
    config.write_text('[mlflow]\ntracking_uri = "http://mlflow:5000"\n[kafka]\nepisodes_topic = "from-toml"\n')
    monkeypatch.setenv("FLEET_CONFIG", str(config))
    monkeypatch.setenv("FLEET_KAFKA__EPISODES_TOPIC", "from-env")
    s = Settings()
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.kafka.episodes_topic == "from-env"


def test_external_s3_without_keys_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_S3__ENDPOINT", "http://minio:9000")
    with pytest.raises(RuntimeError, match="FLEET_S3__ACCESS_KEY"):
        Settings(stack={"state_dir": tmp_path}).s3_credentials()


def test_unknown_settings_are_refused(monkeypatch):
    with pytest.raises(Exception, match="extra"):
        Settings(kafka={"bootstrap": "typo:9092"})


def test_producers_are_idempotent_only_where_the_broker_keeps_that_promise(monkeypatch):
    assert not Settings().kafka.producer_is_idempotent()  # the embedded Tansu: see KafkaSettings
    monkeypatch.setenv("FLEET_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092")
    assert Settings().kafka.producer_is_idempotent()
    monkeypatch.setenv("FLEET_KAFKA__IDEMPOTENT_PRODUCER", "false")
    assert not Settings().kafka.producer_is_idempotent()


def test_consumers_wait_less_at_the_embedded_broker_which_answers_a_waiting_fetch_late(monkeypatch):
    assert Settings().kafka.fetch_wait_ms() == 100
    monkeypatch.setenv("FLEET_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092")
    assert Settings().kafka.fetch_wait_ms() == 500
    monkeypatch.setenv("FLEET_KAFKA__FETCH_MAX_WAIT_MS", "250")
    assert Settings().kafka.fetch_wait_ms() == 250
