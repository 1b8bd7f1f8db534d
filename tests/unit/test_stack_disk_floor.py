"""The embedded S3 on a nearly full disk: a start that names the cause, not a PUT that answers 500."""

from __future__ import annotations

import shutil

import pytest

from infra.settings import Settings
from infra.stack import services
from infra.stack.services import S3_MIN_FREE_BYTES, StackError


def test_seaweedfs_gets_a_fixed_free_space_floor_instead_of_a_share_of_the_disk(tmp_path):
    command = services._seaweed_command(Settings(stack={"state_dir": tmp_path}))

    assert f"-volume.minFreeSpace={S3_MIN_FREE_BYTES // 2**20}MiB" in command


def test_a_disk_near_the_floor_stops_the_start_with_the_directory_and_free_space_named(tmp_path, monkeypatch):
    nearly_full = shutil._ntuple_diskusage(total=2**40, used=2**40 - 600 * 2**20, free=600 * 2**20)
    monkeypatch.setattr(services.shutil, "disk_usage", lambda path: nearly_full)

    with pytest.raises(StackError, match=r"s3: .*s3/data has 600 MiB free.*FLEET_STACK__STATE_DIR"):
        services._seaweed_command(Settings(stack={"state_dir": tmp_path}))
