"""MLflow keeps artifacts in the stack's S3, and Prefect runs flows, on the embedded stack."""

from __future__ import annotations

import pytest

from infra.clients import mlflow_client, s3_client, use_prefect

pytestmark = pytest.mark.integration


def test_mlflow_artifacts_land_in_s3(tracking, tmp_path):
    client = mlflow_client(tracking)
    experiment = client.create_experiment("stack-smoke")
    run = client.create_run(experiment)
    note = tmp_path / "note.txt"
    note.write_text("stored through the tracking server")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    objects = [o.object_name for o in s3_client(tracking).list_objects(tracking.s3.mlflow_bucket, recursive=True)]
    assert any(name.endswith(f"{run.info.run_id}/artifacts/note.txt") for name in objects), objects
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]


def test_prefect_server_records_flow_runs(tracking):
    use_prefect(tracking)
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="stack-smoke")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert any(r.state and r.state.is_completed() for r in runs)
    assert str(client.api_url).startswith(tracking.prefect_api_url)
