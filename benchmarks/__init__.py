"""Benchmarks: each `fleet bench ...` measures the real path and returns a typed result that the
CLI prints as a table and writes as JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BenchResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
