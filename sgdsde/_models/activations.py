"""Activations as data: a name picks φ and φ′ (used by the two-layer network and the symbolic layer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "quadratic": lambda z: z * z,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda z: z,
    "softplus": jax.nn.softplus,
}


def get_activation(name: str):
    """The JAX function for an activation name; raise naming the valid names otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]
