"""Drift of listener scores: summaries and Wallaroo-style assays (binned baseline vs window,
PSI / MaxDiff / SumDiff); the options are in ``docs/listeners.md``, "Drift (assays)"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

METRICS = ("PSI", "MaxDiff", "SumDiff")
BIN_MODES = ("quantile", "equal")
AGGREGATIONS = ("density", "cumulative")
EPS = 1e-4


def _clean(values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


def summarize(values: Any) -> dict[str, Any]:
    """count, mean, std, min, p50, p90, p99, max of the finite values (None when empty)."""
    a = _clean(values)
    if a.size == 0:
        return {"count": 0, "mean": None, "std": None, "min": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.quantile(a, [0.5, 0.9, 0.99])
    return {
        "count": int(a.size),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
    }


def bin_edges(baseline: np.ndarray, bins: int | Sequence[float] = 5, mode: str = "quantile") -> np.ndarray:
    """Inner edges from the baseline (outlier bins -inf/+inf are added by :func:`assay`)."""
    if not isinstance(bins, int):
        edges = np.asarray(sorted(float(x) for x in bins), dtype=np.float64)
        if edges.size < 2:
            raise ValueError("bins: give at least 2 edges, e.g. [0.0, 0.5, 1.0], or a bin count")
        return np.unique(edges)
    if bins < 1:
        raise ValueError(f"bins: expected a positive bin count, got {bins}")
    distinct = np.unique(baseline)
    if distinct.size <= bins:
        # A discrete score (profanity 0/1): one bin per value, split at the midpoints.
        if distinct.size == 1:
            return distinct
        mids = (distinct[:-1] + distinct[1:]) / 2.0
        return np.concatenate([[distinct[0]], mids, [distinct[-1]]])
    if mode == "quantile":
        edges = np.quantile(baseline, np.linspace(0.0, 1.0, bins + 1))
    elif mode == "equal":
        edges = np.linspace(baseline.min(), baseline.max(), bins + 1)
    else:
        raise ValueError(f"bin_mode: expected one of {list(BIN_MODES)}, got {mode!r}")
    return np.unique(edges)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts over [-inf, e0), [e0, e1), ..., [e_{n-2}, e_{n-1}], (e_{n-1}, +inf)."""
    # Interior bins are left-closed; the last interior bin also holds its right edge (the
    # baseline max), so the baseline never lands in an outlier bin.
    idx = np.searchsorted(edges, values, side="right")  # 0 = below e0; len(edges) = >= last edge
    at_max = values == edges[-1]
    idx[at_max] = len(edges) - 1
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)


def _metric(b: np.ndarray, w: np.ndarray, metric: str) -> float:
    if metric == "PSI":
        bb, ww = np.maximum(b, EPS), np.maximum(w, EPS)
        return float(np.sum((ww - bb) * np.log(ww / bb)))
    if metric == "MaxDiff":
        return float(np.max(np.abs(w - b)))
    if metric == "SumDiff":
        return float(np.sum(np.abs(w - b)) / 2.0)
    raise ValueError(f"metric: expected one of {list(METRICS)}, got {metric!r}")


def normalize_metric(metric: str) -> str:
    for m in METRICS:
        if metric.lower() == m.lower():
            return m
    raise ValueError(f"metric: expected one of {list(METRICS)}, got {metric!r}")


def assay(
    baseline: Any,
    window: Any,
    *,
    metric: str = "PSI",
    bins: int | Sequence[float] = 5,
    bin_mode: str = "quantile",
    aggregation: str = "density",
    threshold: float = 0.1,
    warning_threshold: float | None = None,
) -> dict[str, Any]:
    metric = normalize_metric(metric)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation: expected one of {list(AGGREGATIONS)}, got {aggregation!r}")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold: expected a positive number, got {threshold!r}")
    warn = threshold / 2.0 if warning_threshold is None else float(warning_threshold)
    b, w = _clean(baseline), _clean(window)
    out: dict[str, Any] = {
        "metric": metric,
        "threshold": float(threshold),
        "warning_threshold": warn,
        "aggregation": aggregation,
        "baseline_summary": summarize(b),
        "window_summary": summarize(w),
    }
    if b.size == 0 or w.size == 0:
        out.update(score=None, status="NoData", bins=None)
        return out
    edges = bin_edges(b, bins, bin_mode)
    bh, wh = histogram(b, edges), histogram(w, edges)
    bd, wd = bh / bh.sum(), wh / wh.sum()
    if aggregation == "cumulative":
        bd, wd = np.cumsum(bd), np.cumsum(wd)
    score = _metric(bd, wd, metric)
    status = "Alert" if score >= threshold else ("Warning" if score >= warn else "OK")
    out.update(
        score=score,
        status=status,
        bins={
            "edges": ["-inf", *[float(e) for e in edges], "+inf"],
            "baseline": [float(x) for x in bd],
            "window": [float(x) for x in wd],
            "baseline_counts": [int(x) for x in bh],
            "window_counts": [int(x) for x in wh],
        },
    )
    return out
