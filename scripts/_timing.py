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
