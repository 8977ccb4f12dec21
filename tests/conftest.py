"""Strict test environment: x64, rank and dtype promotion strict, warnings are errors (pyproject), hypothesis
without deadlines."""

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile(
    "sgdsde",
    deadline=None,
    max_examples=15,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("sgdsde")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module: the suite compiles thousands of programs, each
    mapped into memory, and one process holding all of them ran out of memory maps (a segfault inside XLA's
    compiler late in the suite); modules rarely share programs, so this costs little."""
    yield
    jax.clear_caches()
