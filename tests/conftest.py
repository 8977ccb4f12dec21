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


# The longest files first (per-file seconds of `pytest --durations=0` on 2 cores, Dec 2026): `-n 2 --dist loadfile`
# hands out whole files in collection order, so a long file collected last (alphabetically: test_symbolic,
# test_three_theories) ran alone at the end while the other worker idled. Order within a file is unchanged.
_LONG_FILES = (
    "test_scripts.py",
    "test_issue_scripts.py",
    "test_sde.py",
    "test_symbolic.py",
    "test_losses.py",
    "test_cli.py",
    "test_three_theories.py",
    "test_large_lr.py",
    "test_noise_loss_matrix.py",
    "test_optimizers.py",
    "test_reproductions.py",
    "test_first_passage.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file and test order kept
