"""Did every episode arrive once? Counted by a reader that shares nothing with the ingest path.

The publisher says which episodes Kafka acknowledged. This reader then reads the episodes topic
and the dead-letter topic from their start to their end, outside any consumer group
(`infra.clients.read_topic`), and counts the index's rows per episode_id. From those three independent sources:

- `lost`: acknowledged, yet neither in the index nor on the dead-letter topic;
- `duplicated`: messages on the topic beyond the first per episode_id (a producer's retry that
  landed twice), plus index rows beyond one per episode_id. The index must absorb the first kind;
  this figure says how often it had to.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel

from infra.clients import read_topic
from infra.settings import Settings
from learner.episode_index import EpisodeQueries


class Reconciliation(BaseModel):
    acknowledged: int
    messages: int  # records on the episodes topic
    indexed: int  # acknowledged episodes with a row in the index
    dead_lettered: int  # acknowledged episodes on the dead-letter topic
    lost: int
    duplicated: int


def episode_ids_on(settings: Settings, topic: str) -> Counter:
    """Messages per episode_id on a topic, read from its start to its end."""
    return Counter(_episode_id(record.value) for record in read_topic(settings, topic))


def reconcile(settings: Settings, acknowledged: Iterable[str], index: EpisodeQueries) -> Reconciliation:
    acknowledged = set(acknowledged)
    on_topic = episode_ids_on(settings, settings.kafka.episodes_topic)
    dead = set(episode_ids_on(settings, settings.kafka.dead_letter_topic))
    rows = Counter(index.episode_ids())
    indexed = {i for i in acknowledged if rows[i]}
    return Reconciliation(
        acknowledged=len(acknowledged),
        messages=sum(on_topic.values()),
        indexed=len(indexed),
        dead_lettered=len(acknowledged & dead),
        lost=len(acknowledged - indexed - dead),
        duplicated=sum(n - 1 for i, n in on_topic.items() if i is not None and n > 1)
        + sum(n - 1 for n in rows.values() if n > 1),
    )


def _episode_id(value: bytes | None) -> str | None:
    try:
        found = json.loads(value)["episode_id"]
    except (TypeError, ValueError, KeyError):
        return None
    return found if isinstance(found, str) else None
