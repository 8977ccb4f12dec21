"""Observables: functions (problem, θ) ↦ array recorded along runs as ensemble mean and variance."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.experimental import checkify

Observable = Callable[..., jnp.ndarray]


class AbstractObservable(eqx.Module):
    """An observable with parameters: a callable (problem, θ) ↦ array with the name it is recorded under.

    Give an instance in ``Record(observables=...)`` beside the built-ins' names (``("loss",
    Sharpness(iters=20))``: recorded as ``"sharpness"``) or as a value of a mapping (recorded under the key).
    Final classes: ``Sharpness``, ``HutchinsonTrace``, ``Accuracy`` (sgdsde/_curvature.py).
    """

    name: eqx.AbstractVar[str]

    @abc.abstractmethod
    def __call__(self, problem, theta) -> jnp.ndarray:
        """The observable at one path's θ (d,)."""


def loss(problem, theta):
    """$L(\\theta)$."""
    return problem.loss(theta)


def sq_norm(problem, theta):
    """$\\|\\theta\\|^2$."""
    return jnp.sum(theta * theta)


def grad_sq_norm(problem, theta):
    """$\\|\\nabla L(\\theta)\\|^2$."""
    g = problem.grad(theta)
    return jnp.sum(g * g)


def parameters(problem, theta):
    """θ itself (d-vector)."""
    return theta


def grad_norm(problem, theta):
    """$\\|\\nabla L(\\theta)\\|$ (one gradient per record)."""
    return jnp.linalg.norm(problem.grad(theta))


def trace_gauss_newton(problem, theta):
    """$\\operatorname{tr} G(\\theta)$ of the generalized Gauss–Newton matrix ($\\frac1n\\sum_i\\|\\nabla f_i\\|^2$
    for the squared loss, = tr ∇²L at zero loss; ``Problem.trace_gauss_newton``)."""
    return problem.trace_gauss_newton(theta)


BUILTIN = {
    "loss": loss,
    "sq_norm": sq_norm,
    "grad_sq_norm": grad_sq_norm,
    "grad_norm": grad_norm,
    "theta": parameters,
    "trace_gauss_newton": trace_gauss_newton,
}


def resolve(
    observables: Sequence[str] | Mapping[str, Observable] | None,
) -> tuple[tuple[str, Observable], ...]:
    """Names → built-ins (or ``AbstractObservable`` instances, under their ``name``), or a mapping name →
    function; default ("loss", "sq_norm")."""
    if observables is None:
        observables = ("loss", "sq_norm")
    if isinstance(observables, Mapping):
        items = list(observables.items())
    else:
        items = []
        for name in observables:
            if isinstance(name, AbstractObservable):
                items.append((name.name, name))
                continue
            if not isinstance(name, str) or name not in BUILTIN:
                raise ValueError(
                    f"observables: unknown name {name!r}; built-ins are {sorted(BUILTIN)}, or give an "
                    "observable such as Sharpness(...)"
                )
            items.append((name, BUILTIN[name]))
        names = [n for n, _ in items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"observables: the name(s) {dup} appear twice; give a mapping name → observable")
    for name, fn in items:
        if not callable(fn):
            raise ValueError(f"observables[{name!r}] must be a function (problem, theta) -> array")
    if not items:
        raise ValueError("observables must name at least one observable")
    return tuple(items)


def check_observables(problem, observables: tuple[tuple[str, Observable], ...], theta) -> None:
    """Evaluate each user observable once at θ (one path) with JAX's index checks: one that indexes past θ (JAX
    would clamp the index silently inside the run) or fails (e.g. returns a non-array) raises ValueError
    naming it, before the run compiles. The library's own (built-ins, ``AbstractObservable`` instances) index
    nothing by hand: they are only traced (their shape checks run, nothing compiles)."""
    theta = jnp.asarray(theta)
    builtin = set(map(id, BUILTIN.values()))
    for name, fn in observables:
        trusted = id(fn) in builtin or isinstance(fn, AbstractObservable)
        try:
            if trusted:
                jax.eval_shape(lambda t, fn=fn: fn(problem, t), theta)
                continue
            # eager, op by op: each op's small program is cached across runs (a jit of this fresh lambda would
            # compile anew at every run: 1.4 s per run of scripts/fig_large_lr.py's observables)
            err, out = checkify.checkify(lambda t, fn=fn: fn(problem, t), errors=checkify.index_checks)(theta)
        except Exception as exc:  # the user's function failed: say which one
            raise ValueError(f"observables[{name!r}] failed at theta0: {type(exc).__name__}: {exc}") from exc
        msg = err.get()
        if msg is not None:
            raise ValueError(
                f"observables[{name!r}] indexes outside theta (d = {theta.shape[-1]}): {msg.strip()}"
            )
