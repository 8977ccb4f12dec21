"""Optimizers with state, through optax: the update $u_k$ for unit learning rate, so that
$\\theta_{k+1} = \\theta_k + \\eta_k u_k$ with $(u_k, s_{k+1}) = T(\\tilde g_k, s_k, \\theta_k)$ (theory/optimizers.md,
OPT-1).

The run's step size η_k (a float, a schedule, a sweep axis) multiplies the update, so an lr sweep or a
schedule stays one compiled program and ``optimizer=None`` is today's SGD bit for bit. The transformation is
built from the optimizer's array leaves at trace time: its hyperparameters (β, ε, weight decay) are traced,
so ``sweep`` varies them in one program (grid name ``"optimizer.beta"``).
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any, ClassVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._describe import describe
from ._layout import FLAT, AbstractLayout
from ._validation import check_positive


def _check_unit_interval(name: str, value) -> jax.Array:
    """β ∈ [0, 1) as a 0-d array leaf (ValueError naming ``name`` otherwise)."""
    v = check_positive(name, value, allow_zero=True)
    if not v < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return jnp.asarray(v)


def _check_moment(name: str, value, *, positive: bool) -> jax.Array | None:
    """An optional initial moment estimate: None, or a 1-D array of finite reals (> 0 with ``positive``), kept
    as an array leaf (a sweep may vary it); ValueError naming ``name`` otherwise. Its length is checked
    against θ's when the optimizer's state is made (``init``)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool, np.bool_)) or np.iscomplexobj(value):
        raise ValueError(f"{name} must be None or a 1-D array of real numbers, got {value!r}")
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be None or a 1-D array of real numbers, got {value!r}") from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"{name} must be a 1-D array of length d (one entry per parameter), got shape {a.shape}"
        )
    if not np.all(np.isfinite(a)) or (positive and not np.all(a > 0)):
        raise ValueError(f"{name} must hold finite reals{' > 0' if positive else ''}, got {value!r}")
    return jnp.asarray(value)


def _start_moment(name: str, value: jax.Array | None, theta, layout: AbstractLayout) -> Any:
    """The initial moment of one path at θ (in ``layout``'s form): ``value`` in θ's dtype (zeros for None);
    ValueError naming ``name`` unless it has the flat θ's shape."""
    if value is None:
        return jax.tree.map(jnp.zeros_like, theta)
    flat = layout.unpack(theta)
    if value.shape != flat.shape:
        raise ValueError(f"{name} must have the parameters' shape {flat.shape}, got {value.shape}")
    return layout.pack(value.astype(flat.dtype))


class AbstractOptimizer(eqx.Module):
    """What turns the stochastic gradient into the step: $u_k, s_{k+1} = T(\\tilde g_k, s_k, \\theta_k)$ and
    $\\theta_{k+1} = \\theta_k + \\eta_k u_k$, T an optax transformation at unit learning rate (OPT-1).

    A subclass gives ``transformation(dtype)``; ``records`` names the per-path scalars of its state that runs
    record beside the observables (``observe``). ``has_sde`` says whether an SDE of it is known (an SDE
    method refuses one without). θ, g and the moments may come in another layout than the flat (d,)
    (``layout``: a ``FunctionModel``'s params pytree, where the update is ``leafwise``)."""

    records: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def transformation(self, dtype) -> optax.GradientTransformation:
        """The optax transformation at unit learning rate, its hyperparameters in ``dtype``."""

    # optax mixes its int32 step count with the (array) decays, which JAX's strict promotion mode refuses: its
    # calls run under standard promotion whatever the user's setting (the numbers do not change)
    def init(self, theta, layout: AbstractLayout = FLAT) -> Any:
        """The state $s_0$ of one path at θ₀ (in ``layout``'s form)."""
        with jax.numpy_dtype_promotion("standard"):
            return self.transformation(jax.tree.leaves(theta)[0].dtype).init(theta)

    def update(self, g, state, theta) -> tuple[Any, Any]:
        """$(u_k, s_{k+1})$ of one path from its stochastic gradient (g, θ and u in one layout)."""
        with jax.numpy_dtype_promotion("standard"):
            return self.transformation(jax.tree.leaves(theta)[0].dtype).update(g, state, theta)

    def update_paths(self, g, state, theta, *, lockstep: bool = False) -> tuple[Any, Any]:
        """$(u_k, s_{k+1})$ of all paths (a leading path axis on g, θ and every state leaf): the update vmapped;
        or, in ``lockstep`` (no path's state restarts, so the integer leaves, optax's step counts, are equal on
        every path) for a ``leafwise`` update, one update of the stacked arrays with the count of path 0, the
        same numbers per entry to rounding: bias corrections $1-\\beta^k$ then scale the whole array, not each
        path's row (theory/optimizers.md, OPT-7)."""
        if not (lockstep and self.leafwise()):
            return jax.vmap(self.update)(g, state, theta)
        shared = jax.tree.map(lambda a: a[0] if _is_count(a) else a, state)
        u, new = self.update(g, shared, theta)
        n = jax.tree.leaves(theta)[0].shape[0]
        return u, jax.tree.map(lambda a: jnp.broadcast_to(a, (n,)) if _is_count(a) else a, new)

    def observe(self, state, layout: AbstractLayout = FLAT) -> dict[str, jax.Array]:
        """Per-path scalars of one path's state, recorded as ensemble mean and variance (names: ``records``),
        reduced over the flat θ's entries whatever the state's layout (the same numbers)."""
        return {}

    def leafwise(self) -> bool:
        """Whether the update acts entry by entry on (g, s, θ), so that it gives the same numbers on any layout
        of θ that only moves entries (a params pytree; theory/function-models.md, FMOD-5). False unless an
        optimizer says so: a user's transformation may mix entries (a global norm, a factored moment)."""
        return False

    def stability_limit(self) -> tuple[float, str] | None:
        """(c, name) with the update locally unstable on a quadratic at $\\eta\\lambda_{\\max} \\ge c$; None
        (the default: adaptive methods, a user's transformation) when no such limit holds."""
        return None

    def label(self) -> str:
        return type(self).__name__

    def description(self, d: int) -> str:
        """The configuration record's text (what a checkpoint's fingerprint compares)."""
        return describe(self)

    @property
    def has_sde(self) -> bool:
        return False


def _is_count(a) -> bool:
    """An integer leaf of an optax state: a step count."""
    return jnp.issubdtype(a.dtype, jnp.integer)


def _sq(x) -> jax.Array:
    return jnp.sum(x * x)


class Momentum(AbstractOptimizer):
    """Heavy-ball momentum (PyTorch's and optax's form, OPT-2): $m_{k+1} = \\beta m_k + \\tilde g_k + w\\theta_k$
    and $\\theta_{k+1} = \\theta_k - \\eta_k m_{k+1}$; Nesterov:
    $\\theta_{k+1} = \\theta_k - \\eta_k(\\tilde g_k + w\\theta_k + \\beta m_{k+1})$. With a constant η,
    v = −ηm is Li–Tai–E's velocity: $v_{k+1} = \\beta v_k - \\eta \\tilde g_k$, $\\theta_{k+1} = \\theta_k + v_{k+1}$.

    Args:
        beta: momentum β in [0, 1) (0: SGD).
        nesterov: Nesterov's accelerated form.
        weight_decay: w ≥ 0, added to the gradient before momentum (PyTorch's ``weight_decay``).
    """

    records: ClassVar[tuple[str, ...]] = ("momentum_sq_norm",)
    beta: jax.Array
    nesterov: bool = eqx.field(static=True)
    weight_decay: jax.Array

    def __init__(self, beta=0.9, nesterov: bool = False, weight_decay=0.0):
        self.beta = _check_unit_interval("beta", beta)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        self.weight_decay = jnp.asarray(check_positive("weight_decay", weight_decay, allow_zero=True))

    def transformation(self, dtype):
        sgd = optax.sgd(1.0, momentum=self.beta.astype(dtype), nesterov=self.nesterov)
        return optax.chain(optax.add_decayed_weights(self.weight_decay.astype(dtype)), sgd)

    def stability_limit(self):
        """Heavy ball: $\\eta\\lambda < 2(1+\\beta)$; Nesterov: $\\eta\\lambda < 2(1+\\beta)/(1+2\\beta)$ (OPT-5;
        the Jury conditions of the 2 × 2 recursion, weight decay not counted)."""
        b = float(self.beta)
        if self.nesterov:
            return (2 * (1 + b) / (1 + 2 * b), "Nesterov momentum")
        return (2 * (1 + b), "heavy-ball momentum")

    def observe(self, state, layout=FLAT):
        """$\\|m\\|^2$, the squared norm of the momentum buffer."""
        return {"momentum_sq_norm": _sq(layout.unpack(momentum_buffer(state)))}

    def leafwise(self) -> bool:
        return True

    @property
    def has_sde(self) -> bool:
        return True


def momentum_buffer(state) -> jax.Array:
    """m of ``Momentum``'s optax state (its trace)."""
    trace = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.TraceState))]
    found = [s.trace for s in trace if isinstance(s, optax.TraceState)]
    if len(found) != 1:
        raise ValueError("the optimizer state holds no single momentum trace")
    return cast(jax.Array, found[0])


class RMSprop(AbstractOptimizer):
    """RMSprop as Malladi et al. write it: $v_{k+1} = \\beta v_k + (1-\\beta)\\tilde g_k^2$,
    $\\theta_{k+1} = \\theta_k - \\eta_k \\tilde g_k/(\\sqrt{v_{k+1}} + \\varepsilon)$ (OPT-3; optax's ``rmsprop`` with
    ε outside the square root, v₀ = 0 unless ``v0`` is given).

    Args:
        beta: the second-moment decay β in [0, 1).
        eps: ε > 0.
        v0: None (optax's start v₀ = 0) or the initial second-moment estimate, a length-d array of finite
            reals > 0 (a warm start; its SDE starts there too: theory/adaptive-sdes.md, ASDE-8).
    """

    records: ClassVar[tuple[str, ...]] = ("second_moment_mean",)
    beta: jax.Array
    eps: jax.Array
    v0: jax.Array | None = None

    def __init__(self, beta=0.999, eps=1e-8, v0=None):
        self.beta = _check_unit_interval("beta", beta)
        self.eps = jnp.asarray(check_positive("eps", eps))
        self.v0 = _check_moment("v0", v0, positive=True)

    def transformation(self, dtype):
        return optax.rmsprop(
            1.0, decay=self.beta.astype(dtype), eps=self.eps.astype(dtype), eps_in_sqrt=False
        )

    def init(self, theta, layout=FLAT):
        """optax's state with v₀ = ``v0`` when given (ValueError naming v0 unless it has θ's shape)."""
        state = super().init(theta, layout)
        if self.v0 is None:
            return state
        nu = _start_moment("v0", self.v0, theta, layout)
        return jax.tree.map(lambda s: s._replace(nu=nu) if _is_rms(s) else s, state, is_leaf=_is_rms)

    def observe(self, state, layout=FLAT):
        """The mean of the second-moment estimate v over coordinates."""
        (s,) = [s for s in jax.tree.leaves(state, is_leaf=_is_rms) if _is_rms(s)]
        return {"second_moment_mean": jnp.mean(layout.unpack(s.nu))}

    def leafwise(self) -> bool:
        return True

    @property
    def has_sde(self) -> bool:
        return True


def _is_rms(s) -> bool:
    return isinstance(s, optax.ScaleByRmsState)


class Adam(AbstractOptimizer):
    """Adam (AdamW with ``weight_decay``), optax's (OPT-4): $m_{k+1} = \\beta_1 m_k + (1-\\beta_1)\\tilde g_k$,
    $v_{k+1} = \\beta_2 v_k + (1-\\beta_2)\\tilde g_k^2$ and
    $\\theta_{k+1} = \\theta_k - \\eta_k(\\hat m/(\\sqrt{\\hat v}+\\varepsilon) + w\\theta_k)$, the hats dividing by $1-\\beta^{k+1}$.

    A warm start (``v0`` given, ``m0`` optional) starts from the moment estimates m₀ = ``m0`` (0 if None) and
    v₀ = ``v0`` and takes them as unbiased: no bias correction ($\\hat m = m$, $\\hat v = v$, the limit
    k → ∞ of $1-\\beta^k$), as a run long past its warm-up (theory/adaptive-sdes.md, ASDE-8).

    Args:
        b1, b2: the moment decays in [0, 1).
        eps: ε > 0.
        weight_decay: w ≥ 0, decoupled (AdamW; 0: Adam).
        m0: None or the initial first moment, a length-d array of finite reals (needs ``v0``).
        v0: None (optax's cold start m₀ = v₀ = 0 with bias corrections) or the initial second moment, a
            length-d array of finite reals > 0.
    """

    records: ClassVar[tuple[str, ...]] = ("first_moment_sq_norm", "second_moment_mean")
    b1: jax.Array
    b2: jax.Array
    eps: jax.Array
    weight_decay: jax.Array
    m0: jax.Array | None = None
    v0: jax.Array | None = None

    def __init__(self, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, m0=None, v0=None):
        self.b1 = _check_unit_interval("b1", b1)
        self.b2 = _check_unit_interval("b2", b2)
        self.eps = jnp.asarray(check_positive("eps", eps))
        self.weight_decay = jnp.asarray(check_positive("weight_decay", weight_decay, allow_zero=True))
        self.m0 = _check_moment("m0", m0, positive=False)
        self.v0 = _check_moment("v0", v0, positive=True)
        if self.m0 is not None and self.v0 is None:
            raise ValueError(
                "v0: a warm start with m0 needs the second moment v0 too (a length-d array > 0); without "
                "v0 the optimizer starts cold (m0 = v0 = 0, bias-corrected)"
            )
        if self.m0 is not None and self.v0 is not None and self.m0.shape != self.v0.shape:
            raise ValueError(f"m0 must have v0's shape {self.v0.shape}, got {self.m0.shape}")

    @property
    def warm(self) -> bool:
        """Whether the run starts from given moments without bias correction."""
        return self.v0 is not None

    def transformation(self, dtype):
        c = lambda x: x.astype(dtype)
        return optax.adamw(1.0, c(self.b1), c(self.b2), c(self.eps), weight_decay=c(self.weight_decay))

    def init(self, theta, layout=FLAT):
        """optax's state; a warm start's holds m₀ = ``m0``, v₀ = ``v0`` (ValueError naming them unless they
        have θ's shape) and optax's step count at its saturation (2³¹ − 1, where ``safe_increment`` stops):
        $1-\\beta^{k}$ is then exactly 1 in floating point, so optax's own update runs without bias correction."""
        state = super().init(theta, layout)
        if not self.warm:
            return state
        mu, nu = _start_moment("m0", self.m0, theta, layout), _start_moment("v0", self.v0, theta, layout)

        def warm(s):
            if not _is_adam(s):
                return s
            saturated = jnp.asarray(jnp.iinfo(s.count.dtype).max, s.count.dtype)
            return s._replace(count=saturated, mu=mu, nu=nu)

        return jax.tree.map(warm, state, is_leaf=_is_adam)

    def observe(self, state, layout=FLAT):
        """$\\|m\\|^2$ and the mean of v (the raw moment estimates)."""
        (s,) = [s for s in jax.tree.leaves(state, is_leaf=_is_adam) if _is_adam(s)]
        mu, nu = layout.unpack(s.mu), layout.unpack(s.nu)
        return {"first_moment_sq_norm": _sq(mu), "second_moment_mean": jnp.mean(nu)}

    def leafwise(self) -> bool:
        return True

    @property
    def has_sde(self) -> bool:
        return True


def _is_adam(s) -> bool:
    return isinstance(s, optax.ScaleByAdamState)


class Optax(AbstractOptimizer):
    """A user's optax transformation, at unit learning rate (``optax.sgd(1.0, momentum=…)``,
    ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1.0))``): the run's lr multiplies its update.
    No SDE is known for it: an SDE method refuses it."""

    tx: optax.GradientTransformation = eqx.field(static=True)

    def __init__(self, tx):
        if not isinstance(tx, optax.GradientTransformation):
            raise ValueError(
                "optimizer must be sgdsde.Momentum/RMSprop/Adam or an optax.GradientTransformation "
                f"(wrapped as sgdsde.Optax(tx)), got {type(tx).__name__}"
            )
        self.tx = tx

    def transformation(self, dtype):
        return self.tx

    def label(self) -> str:
        return "Optax"

    def description(self, d: int) -> str:
        """Its repr names only functions, so the record adds a probe: a digest of three float64 updates of a
        fixed gradient sequence in dimension d, in JAX's default float (two transformations that update differently record
        differently, so a checkpoint of another optimizer is refused)."""
        with jax.ensure_compile_time_eval():
            theta = jnp.linspace(-1.0, 1.0, d)
            state, out = self.init(theta), []
            for k in range(3):
                u, state = self.update(jnp.cos(theta * (k + 1)) + 0.5, state, theta)
                out.append(np.asarray(u, np.float64))
        digest = hashlib.sha256(np.concatenate(out).tobytes()).hexdigest()[:16]
        return f"{describe(self)} probe={digest}"


def check_optimizer(optimizer) -> AbstractOptimizer | None:
    """None, an ``AbstractOptimizer``, or a bare optax transformation (wrapped in ``Optax``); ValueError naming
    ``optimizer`` otherwise."""
    if optimizer is None or isinstance(optimizer, AbstractOptimizer):
        return optimizer
    if isinstance(optimizer, optax.GradientTransformation):
        return Optax(optimizer)
    raise ValueError(
        "optimizer must be None, sgdsde.Momentum(...), sgdsde.RMSprop(...), sgdsde.Adam(...) or an "
        f"optax.GradientTransformation at unit learning rate, got {type(optimizer).__name__}"
    )


def check_state(optimizer: AbstractOptimizer, theta: jax.Array) -> None:
    """ValueError unless the optimizer's update maps a (d,) gradient and its state at θ to a (d,) update of
    θ's dtype (abstract evaluation: nothing runs)."""
    spec = jax.ShapeDtypeStruct(theta.shape, theta.dtype)
    try:
        state = jax.eval_shape(optimizer.init, spec)
        u, new = jax.eval_shape(optimizer.update, spec, state, spec)
    except Exception as exc:  # the user's transformation failed on a flat parameter vector
        raise ValueError(
            f"optimizer: its init/update fail on a parameter vector of shape {theta.shape}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(u, jax.ShapeDtypeStruct) or u.shape != theta.shape:
        raise ValueError(f"optimizer: its update must have θ's shape {theta.shape}, got {u}")
    if jax.tree.structure(new) != jax.tree.structure(state) or any(
        a.shape != b.shape or a.dtype != b.dtype
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state), strict=True)
    ):
        raise ValueError("optimizer: its update changes the shape or dtype of its state")
