"""Confidence intervals for success rates, shared by evaluation, canary analysis and dashboards."""

from __future__ import annotations

import math


def wilson_bounds(successes, n: int, z: float = 1.96):
    """The Wilson score interval of `successes` out of `n` (n > 0), unrounded; `successes` may be
    a number or a numpy array of them (the canary's predictive analysis takes thousands at once)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return centre - half, centre + half


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    low, high = wilson_bounds(successes, n, z)
    return [round(max(0.0, float(low)), 4), round(min(1.0, float(high)), 4)]


def mcnemar(a: list[bool], b: list[bool], alternative: str = "two-sided") -> dict[str, float | int]:
    """Exact McNemar test of two policies run on the same seeds: does A succeed where B fails
    more often than the reverse? Only the discordant seeds carry evidence; under the null each is
    A's with probability 1/2, so p is a binomial tail (exact, sound at small counts).

    alternative: "two-sided" (A and B differ) or "greater" (A is better than B: the one-sided p,
    the chance of A winning at least this many discordant seeds if neither were better)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} against {len(b)}")
    if alternative not in ("two-sided", "greater"):
        raise ValueError(f"alternative {alternative!r}: two-sided or greater")
    a_only = sum(x and not y for x, y in zip(a, b, strict=True))
    b_only = sum(y and not x for x, y in zip(a, b, strict=True))
    n = a_only + b_only
    if alternative == "greater":
        p = sum(math.comb(n, i) for i in range(a_only, n + 1)) / 2**n
    else:
        p = 2 * sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2**n
    return {"a_only": a_only, "b_only": b_only, "p_value": round(min(1.0, p), 6)}
