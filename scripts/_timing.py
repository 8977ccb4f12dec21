"""Timing shared by the benchmarks: the median of repeated runs after one warm-up (compile) call."""

import statistics
import time


def median_seconds(fn, reps):
    fn()  # compile and warm up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired_medians(fns: dict, reps):
    """Median seconds of each function and the median of per-round ratios to the first one, running the
    functions in turn each round (after one warm-up each), so machine noise hits all of them alike."""
    for fn in fns.values():
        fn()
    rounds = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            rounds[name].append(time.perf_counter() - t)
    first = next(iter(fns))
    medians = {name: statistics.median(ts) for name, ts in rounds.items()}
    ratios = {
        name: statistics.median([a / b for a, b in zip(rounds[first], ts, strict=True)])
        for name, ts in rounds.items()
    }
    return medians, ratios
