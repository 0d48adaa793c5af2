from __future__ import annotations

import math

import numpy as np
import pytest

from wallaroo_pulumi.runtime.services.listeners import drift


def test_same_distribution_is_ok_shifted_is_alert():
    r = np.random.default_rng(0)
    base = r.beta(2, 8, 5000)
    same = drift.assay(base, r.beta(2, 8, 5000))
    shifted = drift.assay(base, r.beta(5, 5, 5000))
    assert same["status"] == "OK" and same["score"] < 0.05
    assert shifted["status"] == "Alert" and shifted["score"] > 0.1
    assert len(shifted["bins"]["baseline"]) == 5 + 2  # quantile bins + 2 outlier bins
    for metric in ("MaxDiff", "SumDiff", "maxdiff"):
        a = drift.assay(base, r.beta(5, 5, 5000), metric=metric)
        assert a["status"] == "Alert" and 0 < a["score"] <= 1


def test_discrete_scores_get_one_bin_per_value():
    base = np.r_[np.zeros(900), np.ones(100)]
    win = np.r_[np.zeros(700), np.ones(300)]
    a = drift.assay(base, win)
    assert a["bins"]["baseline_counts"] == [0, 900, 100, 0]
    assert a["status"] == "Alert"
    assert drift.assay(base, base)["score"] == 0.0


#: Four interior bins [0,1) [1,2) [2,3) [3,4] (given as edges, so no quantile is involved) plus the two
#: outlier bins; every value sits in the middle of its bin. The baseline is uniform: 250 in each.
EDGES = [0.0, 1.0, 2.0, 3.0, 4.0]
BASELINE_COUNTS = [250, 250, 250, 250]


def _values(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, i + 0.5) for i, n in enumerate(counts)])


def _psi(base: list[int], win: list[int]) -> float:
    """Population stability index, written out: sum over bins of (w - b) * ln(w / b) on the bin shares."""
    b_total, w_total = sum(base), sum(win)
    return sum((w / w_total - b / b_total) * math.log((w / w_total) / (b / b_total)) for b, w in zip(base, win, strict=True))


# window counts -> the band it must land in under the defaults (threshold 0.1, warning at half of it: 0.05)
BANDS = [
    ([260, 240, 250, 250], "OK"),  # PSI 0.0008
    ([330, 170, 250, 250], "Warning"),  # PSI 0.0531
    ([400, 100, 250, 250], "Alert"),  # PSI 0.2080
]


@pytest.mark.parametrize(("window", "band"), BANDS, ids=[band for _, band in BANDS])
def test_psi_lands_in_each_band(window: list[int], band: str) -> None:
    expected = _psi(BASELINE_COUNTS, window)
    assert {"OK": expected < 0.05, "Warning": 0.05 <= expected < 0.1, "Alert": expected >= 0.1}[band]  # the case itself
    a = drift.assay(_values(BASELINE_COUNTS), _values(window), bins=EDGES)
    assert a["status"] == band, a
    assert a["score"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert (a["threshold"], a["warning_threshold"]) == (0.1, 0.05)
    assert a["bins"]["baseline_counts"] == [0, *BASELINE_COUNTS, 0]
    assert a["bins"]["window_counts"] == [0, *window, 0]


def test_band_edges_are_inclusive_below() -> None:
    """MaxDiff on shares that are exact binary fractions, so the score is exactly 0.125: a score equal
    to a threshold is in the band that threshold opens (Alert at >= threshold, Warning at >= warning)."""
    base, win = _values([2, 2, 2, 2]), _values([3, 1, 2, 2])  # shares 0.25 each vs 0.375, 0.125, 0.25, 0.25
    cases = [
        ({"threshold": 0.125}, "Alert"),
        ({"threshold": 0.126}, "Warning"),  # warning defaults to half: 0.063
        ({"threshold": 0.25, "warning_threshold": 0.125}, "Warning"),
        ({"threshold": 0.25, "warning_threshold": 0.126}, "OK"),
        ({"threshold": 0.2501}, "OK"),  # warning 0.12505 > 0.125
    ]
    for kwargs, band in cases:
        a = drift.assay(base, win, metric="MaxDiff", bins=EDGES, **kwargs)
        assert (a["score"], a["status"]) == (0.125, band), (kwargs, a["score"], a["status"])


def test_nodata() -> None:
    base = np.linspace(0, 1, 1000)
    assert drift.assay(base, [])["status"] == "NoData"
    assert drift.assay([], base)["status"] == "NoData"


def test_summary():
    s = drift.summarize([0.0, 1.0, 2.0, 3.0, float("nan")])
    assert s["count"] == 4 and s["mean"] == 1.5 and s["p50"] == 1.5
    assert drift.summarize([])["count"] == 0


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="metric"):
        drift.assay([1, 2], [1, 2], metric="KL")
    with pytest.raises(ValueError, match="threshold"):
        drift.assay([1, 2], [1, 2], threshold=-1)
    with pytest.raises(ValueError, match="bins"):
        drift.assay([1, 2], [1, 2], bins=0)
