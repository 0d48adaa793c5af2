"""The soak's numbers (issue 26): p99 per minute and, for every process and their total, growth per
request as the least-squares slope of RSS over the count of requests done, after warm-up.

Warm-up: the samples before the first `warmup` fraction of the requests had been answered (default
a quarter: pools, caches and the allocator's arenas fill in the first minutes and level off). The
trend is fitted over the rest, and apart over the last half of it: a structure that fills to a cap
shows a late slope near 0, one that grows without bound keeps its slope.
"""

from __future__ import annotations

import bisect

from benchmarks._harness import percentile

Samples = list[tuple[float, dict[str, float]]]  # (time, {process: MB})
Done = list[tuple[float, float]]  # (end time, latency s) of every answered request


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (0.0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def _with_counts(samples: Samples, done: Done) -> list[tuple[int, dict[str, float]]]:
    """Each sample with the number of requests answered by its time."""
    ends = sorted(t for t, _ in done)
    return [(bisect.bisect_right(ends, t), row) for t, row in samples]


def growth_table(samples: Samples, done: Done, warmup: float = 0.25) -> list[str]:
    """Per process and total: MB at the end of warm-up, at the end, and KB per request (least squares
    of RSS over requests answered) after warm-up and over its last half."""
    counted = [(n, {**row, "total": sum(row.values())}) for n, row in _with_counts(samples, done)]
    start = int(len(done) * warmup)
    after = [(n, row) for n, row in counted if n >= start]
    if len(after) < 4:
        return ["growth: too few samples after warm-up (run longer)"]
    late = [(n, row) for n, row in after if n >= (start + len(done)) / 2]
    names = sorted({k for _, row in samples for k in row}) + ["total"]
    lines = [f"growth per request after warm-up (the first {warmup:.0%} = {start:,} requests; least squares of RSS "
             f"over requests answered, {len(after)} samples):",
             f"  {'process':<34} {'warm MB':>8} {'end MB':>8} {'max MB':>8} {'KB/req':>8} {'late KB/req':>11}"]
    for name in names:
        pts = [(n, row.get(name, 0.0)) for n, row in after]
        pts_late = [(n, row.get(name, 0.0)) for n, row in late]
        lines.append(f"  {name:<34} {pts[0][1]:>8.1f} {pts[-1][1]:>8.1f} {max(y for _, y in pts):>8.1f} "
                     f"{slope(pts) * 1024:>+8.3f} {slope(pts_late) * 1024:>+11.3f}")
    return lines


def minute_table(samples: Samples, done: Done, t_start: float) -> list[str]:
    """Requests, p50, p99 and RSS (runtime, all processes) for each minute of the load."""
    lines = [f"{'minute':>6} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'runtime MB':>11} {'all MB':>8}"]
    minutes = int((done[-1][0] - t_start) // 60) + 1 if done else 0
    for m in range(minutes):
        lo, hi = t_start + 60 * m, t_start + 60 * (m + 1)
        lat = [lt for t, lt in done if lo <= t < hi]
        rows = [row for t, row in samples if lo <= t < hi]
        if lat:
            rt = max((r.get("runtime", 0.0) for r in rows), default=0.0)
            total = max((sum(r.values()) for r in rows), default=0.0)
            lines.append(f"{m + 1:>6} {len(lat):>9} {percentile(lat, 50) * 1e3:>8.1f} "
                         f"{percentile(lat, 99) * 1e3:>8.1f} {rt:>11.0f} {total:>8.0f}")
    return lines


def p99_flatness(done: Done, t_start: float, warmup: float = 0.25) -> str:
    """p99 of the first and last quarter after warm-up, and the least-squares slope of the per-minute
    p99 (ms per hour) after warm-up: flat reads as a slope near 0 and quarters alike."""
    after = done[int(len(done) * warmup):]
    if len(after) < 100:
        return "p99: too few requests after warm-up"
    q = len(after) // 4
    first, last = [lt for _, lt in after[:q]], [lt for _, lt in after[-q:]]
    per_min: dict[int, list[float]] = {}
    for t, lt in after:
        per_min.setdefault(int((t - t_start) // 60), []).append(lt)
    pts = [(m, percentile(v, 99) * 1e3) for m, v in sorted(per_min.items()) if len(v) >= 20]
    return (f"p99 after warm-up: first quarter {percentile(first, 99) * 1e3:.1f} ms, last quarter "
            f"{percentile(last, 99) * 1e3:.1f} ms; per-minute p99 trend {slope(pts) * 60:+.1f} ms per hour "
            f"({len(pts)} minutes)")
