from __future__ import annotations

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


def test_warning_band_and_nodata():
    base = np.linspace(0, 1, 1000)
    a = drift.assay(base, np.linspace(0.03, 1.0, 1000), threshold=0.1, warning_threshold=0.001)
    assert a["status"] in ("Warning", "OK")
    assert drift.assay(base, [])["status"] == "NoData"


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
