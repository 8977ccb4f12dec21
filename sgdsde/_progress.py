"""A dependency-free progress line on stderr for long runs."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(done)`` redraws "label  42% 1.2e7 path-steps/s ETA 3s"; a no-op when disabled."""

    def __init__(self, label: str, total: int, enabled: bool = True, unit: str = "path-steps"):
        self.label, self.total, self.enabled, self.unit = label, max(int(total), 1), enabled, unit
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last_decile = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        frac = min(done / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        line = f"{self.label:<28s} {100 * frac:5.1f}%  {rate:9.3g} {self.unit}/s  ETA {eta:6.1f}s"
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if frac >= 1 else ""))
            sys.stderr.flush()
        elif int(frac * 10) > self.last_decile:
            self.last_decile = int(frac * 10)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
