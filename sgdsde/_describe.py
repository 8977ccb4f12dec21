"""The configuration record's text for an object (one formula, used by results, checkpoints and sweeps)."""

from __future__ import annotations

import equinox as eqx
import numpy as np


def describe(obj) -> str:
    """The configuration record's text for ``obj``: equinox's tree repr with array values written out in
    full precision (up to 10⁴ elements each), so that a reloaded result says exactly what ran."""
    with np.printoptions(precision=17, floatmode="unique", threshold=10_000):
        return " ".join(eqx.tree_pformat(obj, short_arrays=False, width=10_000).split())
