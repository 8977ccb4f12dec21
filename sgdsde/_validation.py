"""Argument checks shared by every public entry point: they run before anything compiles."""

from __future__ import annotations

import math

import numpy as np


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a real number, finite and > 0 (>= 0 with ``allow_zero``), else raise
    (strings, booleans and complex numbers are not numbers here, even when float() would convert them)."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or np.iscomplexobj(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    bound = ">= 0" if allow_zero else "> 0"
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def check_int_range(name: str, value, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in [low, high], else raise naming the range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {rng}, got {v}")
    return v


def check_psd(name: str, matrix, *, rtol: float = 1e-10) -> np.ndarray:
    """Return ``matrix`` as a symmetric PSD numpy array, else raise naming it."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} must be finite")
    scale = max(float(np.max(np.abs(m))), 1e-300)
    if not np.allclose(m, m.T, rtol=0, atol=rtol * scale * 10):
        raise ValueError(f"{name} must be symmetric")
    lo = float(np.linalg.eigvalsh((m + m.T) / 2).min())
    if lo < -rtol * scale * m.shape[0]:
        raise ValueError(f"{name} must be positive semi-definite; its smallest eigenvalue is {lo:.3g}")
    return m


def check_dtype(dtype):
    """Return a numpy float dtype; float64 needs ``jax_enable_x64``."""
    import jax

    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    if dt == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "dtype=float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before creating arrays (or set JAX_ENABLE_X64=1)"
        )
    return dt
