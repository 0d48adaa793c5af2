"""The benchmarks still run: they are not part of the suite's timing, but an import they lost
or a flag they no longer parse would otherwise only show when someone needs the numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((REPO / "benchmarks").glob("bench_*.py"))


def test_every_benchmark_is_found() -> None:
    assert {p.name for p in BENCHMARKS} >= {"bench_autoscale.py", "bench_endpoints.py", "bench_listeners.py", "bench_preview.py",
                                            "bench_runtime.py", "bench_sandbox.py"}


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports_and_parses_its_flags(script: Path) -> None:
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_listener_benchmark_prints_its_table_on_a_small_run() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_listeners.py", "--sizes", "200,400", "--scorers", "toxicity",
         "--executor", "scorer"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("toxicity"))
    assert "200 r/s" in done.stdout and "400 r/s" in done.stdout, done.stdout
    assert len(row.split()) == 8, row  # load, score-only, two sizes (s, r/s), growth


def test_listener_window_benchmark_reports_peak_memory_and_rows_per_second() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_listeners.py", "--window-rows", "300,600", "--scorers", "toxicity",
         "--executor", "scorer", "--page-size", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "peak above idle MB" in done.stdout and "rows/s" in done.stdout, done.stdout
    table = done.stdout.split("peak above idle MB", 1)[1]
    rows = [line.split() for line in table.splitlines() if line.strip().startswith(("300 ", "600 "))]
    assert [r[0] for r in rows] == ["300", "600"], done.stdout


def test_soak_report_reads_growth_per_request_after_warm_up() -> None:
    """The soak's growth figure is the slope of RSS over requests answered, warm-up left out: a
    process growing 1 MB per 10,000 requests reads +0.102 KB/request; one that fills during
    warm-up and then stays flat reads 0, its late slope too."""
    from benchmarks._soak_report import growth_table

    done = [(float(t), 0.1) for t in range(1, 40_001)]  # one request answered per second
    samples = [(float(t), {"leaky": 100 + t / 10_000, "warms": 100 + min(t, 8_000) / 1_000})
               for t in range(0, 40_001, 2)]
    rows = {line.split()[0]: line.split() for line in growth_table(samples, done)[2:]}
    assert float(rows["leaky"][4]) == pytest.approx(1024 / 10_000, abs=1e-3)
    assert float(rows["leaky"][5]) == pytest.approx(1024 / 10_000, abs=1e-3)
    assert float(rows["warms"][4]) == pytest.approx(0, abs=1e-6) and float(rows["warms"][5]) == pytest.approx(0, abs=1e-6)
    assert float(rows["total"][4]) == pytest.approx(1024 / 10_000, abs=1e-3)
