"""Confidence intervals for success rates, shared by evaluation, canary analysis and dashboards."""

from __future__ import annotations

import math


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, float(centre - half)), 4), round(min(1.0, float(centre + half)), 4)]


def mcnemar(a: list[bool], b: list[bool]) -> dict[str, float | int]:
    """Exact McNemar test of two policies run on the same seeds: does A succeed where B fails
    more often than the reverse? Only the discordant seeds carry evidence; under the null each is
    A's with probability 1/2, so the two-sided p is a binomial tail (exact, sound at small counts).
    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} against {len(b)}")
    a_only = sum(x and not y for x, y in zip(a, b, strict=True))
    b_only = sum(y and not x for x, y in zip(a, b, strict=True))
    n, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": round(min(1.0, 2 * tail), 6)}
