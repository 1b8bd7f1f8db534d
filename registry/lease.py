"""One rollout transition at a time per model, across every learner and operator.

The registry has no compare-and-set across aliases, so a transition checks, then sets: two
learners starting two canaries at once could both pass "no canary is running". A lease makes
check-and-set one step. It is one object, `rollout-lease/<model>.json` in the registry's bucket,
written only with S3's conditional PUTs: `If-None-Match: *` creates it, `If-Match: <etag>` takes
over one that has expired or been released. Of two writers racing, S3 lets exactly one win.

A holder killed with SIGKILL keeps the lease until it expires (`ttl_s`): the others wait, then
take it over. Expiry compares wall clocks, so learners need synchronised clocks (NTP), as any
lease does.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid

from botocore.exceptions import ClientError, EndpointConnectionError

from infra.clients import s3_conditional_client, unavailable
from infra.errors import FleetError
from infra.settings import Settings

LEASE_PREFIX = "rollout-lease"
log = logging.getLogger(__name__)


class RolloutBusy(FleetError):
    """Another learner or operator is changing this model's rollout."""

    hint = "retry when it has finished; a holder that died frees the lease when it expires"


class RolloutLease:
    def __init__(self, settings: Settings, model: str, ttl_s: float = 120.0, wait_s: float = 60.0):
        self.settings, self.ttl_s, self.wait_s = settings, ttl_s, wait_s
        self.bucket, self.key = settings.s3.mlflow_bucket, f"{LEASE_PREFIX}/{model}.json"
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._s3 = s3_conditional_client(settings)
        self._etag: str | None = None

    def __enter__(self) -> RolloutLease:
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while (etag := self._try_take()) is None:
            if time.monotonic() > deadline:
                held = self._read()
                raise RolloutBusy(
                    f"the rollout of {self.key} is held by {held[0]['holder'] if held else 'someone'} "
                    f"(waited {self.wait_s:.0f} s)"
                )
            time.sleep(0.1 + 0.2 * random.random())  # apart, so that waiters do not retry in step
        self._etag = etag

    def release(self) -> None:
        if self._etag is None:
            return
        # expired at once, written only if it is still ours: a holder that outlived its lease
        # must not free the one a successor now holds
        if self._put({"holder": self.holder, "expires_at": 0}, IfMatch=self._etag) is None:
            log.warning("%s: the lease expired while held (ttl %.0f s) and was taken over", self.key, self.ttl_s)
        self._etag = None

    def _try_take(self) -> str | None:
        mine = {"holder": self.holder, "expires_at": time.time() + self.ttl_s}
        if (etag := self._put(mine, IfNoneMatch="*")) is not None:
            return etag
        held = self._read()
        if held is None or held[0]["expires_at"] > time.time():
            return None  # held (or deleted by hand just now: the next try creates it)
        return self._put(mine, IfMatch=held[1])  # expired or released: one taker wins

    def _put(self, body: dict, **condition: str) -> str | None:
        """The new ETag, or None when the condition failed (someone else wrote first)."""
        try:
            return self._s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(body).encode(), **condition)[
                "ETag"
            ]
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return None  # 412 lost the race; 409 a concurrent conditional write in flight
            raise unavailable(self.settings, "s3", f"rollout lease {self.key}: {e}") from e
        except EndpointConnectionError as e:
            raise unavailable(self.settings, "s3", f"rollout lease {self.key}: {e}") from e

    def _read(self) -> tuple[dict, str] | None:
        try:
            got = self._s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise unavailable(self.settings, "s3", f"rollout lease {self.key}: {e}") from e
        try:
            return json.loads(got["Body"].read()), got["ETag"]
        except ValueError:
            return {"holder": "unreadable", "expires_at": 0}, got["ETag"]  # damaged: treat as expired
