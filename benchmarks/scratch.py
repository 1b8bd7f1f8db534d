"""What a benchmark run made, removed when it ends: its topics, the media it put in S3, its work
directory. A bench may be pointed at a production broker and bucket (it isolates its topics and
consumer group from theirs, `Settings.isolated`), and it should leave them as it found them:
before this, each `fleet bench ingest` left four topics and ~44 MB of media behind."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from minio.deleteobjects import DeleteObject

from infra import stack
from infra.clients import kafka_admin, s3_client
from infra.settings import Settings
from learner.episode_index import open_index

log = logging.getLogger(__name__)
BENCH_PREFIX = "bench-"  # what a bench names its isolated run (`Settings.isolated`)


def remove_run(settings: Settings, work: Path) -> None:
    """`settings` are the run's isolated ones; the media removed are those its index names (with
    packs, one object holds several episodes: each key once). What cannot be removed is named in a
    warning and left: the run's figures are not lost for it."""
    try:
        with open_index(settings) as index:
            keys = sorted({episode.media.key for episode in index.query()})
        failed = list(s3_client(settings).remove_objects(settings.s3.episodes_bucket, map(DeleteObject, keys)))
        if failed:
            log.warning("%d of the run's %d media objects were left: %s", len(failed), len(keys), failed[0])
        _delete_topics(settings)
    except Exception as e:  # noqa: BLE001 - a cleanup that fails leaves things, never the result
        log.warning("the bench run's media or topics were left in place: %s", e)
    shutil.rmtree(work, ignore_errors=True)


def _delete_topics(settings: Settings) -> None:
    doomed = stack.topics(settings)
    if not all(t.startswith(BENCH_PREFIX) for t in doomed):  # never the fleet's own
        raise ValueError(f"not a bench run's topics: {doomed}")
    admin = kafka_admin(settings)
    try:
        if there := sorted(set(doomed) & set(admin.list_topics())):
            admin.delete_topics(there)
    finally:
        admin.close()
