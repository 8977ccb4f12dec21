"""Symbolic layer at scale: derivation, code generation, first compile, and evaluation vs autodiff.

For the two-layer tanh network at (p, m) = input dim × width, d = m(p + 1) parameters: time sympy's
derivation of everything the SME and the sharpness regularizer need (drift of order 2, minibatch diffusion
factor, Itô→Stratonovich correction, tr∇²L and its gradient), the sympy → JAX code generation, the first
compile, and the evaluation (median over repeats, vmapped over an ensemble of paths) against hand-written
autodiff of the same quantities in the same process (paired rounds: the two are timed in turn, and the
ratio is the median of the per-round ratios, so load from other jobs hits both alike). The drift of order
1 (−∇L) is timed too. Both code generators are compared on the drift. The last line is
``ratio_vs_autodiff=<worst drift ratio (order 1 or 2) at d >= 100>``, the one before it the worst ratio of
any quantity at any size. A call of the drift takes 50-300 us, and both programs' times change by up to
2x from one compilation to the next (measured: same code, fresh jit); so each drift is compiled
``DRIFT_COMPILES`` times per side and the paired rounds of all compilations are pooled.

    python scripts/bench_symbolic.py [--quick] [--sizes 10x10,20x20] [--repeats 50] [--force-symbolic]

On a machine shared with other jobs, pin it to one core (``taskset -c 0``; theory/symbolic.md says why).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds

import sgdsde as sd
import sgdsde.symbolic as sy

SIZES = [(2, 2), (5, 5), (10, 10), (20, 20), (50, 20)]
QUICK_SIZES = [(2, 2), (5, 5)]
UNIT_KERNELS = ("grad_u", "hvp_u", "jp_u", "laplacian_u", "grad_laplacian_u")
# Autodiff baselines that materialise d × d (Hessian) or d × n × d (Jacobian of A) per path: skipped beyond
# this d, where they no longer fit a laptop's memory (the symbolic versions never build them).
HEAVY = ("stratonovich", "trace_hessian", "grad_trace_hessian")
MAX_HEAVY_D = 500
DRIFT_COMPILES = 3


def _call(fn, *args):
    return jax.block_until_ready(fn(*args))


def _paired(pairs, repeats: int) -> tuple[float, float, float]:
    """Median symbolic time, median autodiff time and median per-round ratio over ``repeats`` rounds, each
    timing every (symbolic, autodiff) pair in turn (after one warm-up call each)."""
    for fs, fa in pairs:
        fs(), fa()
    ts, ta, ratio = [], [], []
    for _ in range(repeats):
        for fs, fa in pairs:
            t0 = time.perf_counter()
            fs()
            t1 = time.perf_counter()
            fa()
            t2 = time.perf_counter()
            ts.append(t1 - t0)
            ta.append(t2 - t1)
            ratio.append((t1 - t0) / (t2 - t1))
    return float(np.median(ts)), float(np.median(ta)), float(np.median(ratio))


def _fresh(fn):
    """A new jit around ``fn``: traced and compiled again (same program, a fresh compilation)."""
    return jax.jit(lambda *args: fn(*args))


def _median_time(fn, *args, repeats: int) -> float:
    return median_seconds(functools.partial(_call, fn, *args), repeats)


def _symbolic_functions(model, noise, backend, X, y):
    """Fresh (uncached) derivation + code generation; returns the jitted functions and the timings."""
    t0 = time.perf_counter()
    k = sy.SymbolicKernels(sy.symbolic_model(model), backend)
    for name in UNIT_KERNELS:
        k.expr(name)
    t1 = time.perf_counter()
    for name in UNIT_KERNELS:
        k.unit_function(name)
    t2 = time.perf_counter()
    # The SME as users get it from derive_sme, on these freshly derived kernels.
    derivatives = sy.SymbolicDerivatives.from_kernels(k)

    # The data are closed over, as in the autodiff baseline (the X, y arguments below are unused).
    problem = sd.Problem(model, X, y, derivatives=derivatives)
    smes = {order: sd.SME(problem, noise, order) for order in (1, 2)}

    def sme(order, X, y):
        return smes[order]

    def trace(th, X, y):
        return k.mean("trace_hessian_loss", th, X, y)

    def grad_trace(th, X, y):
        return k.mean("grad_trace_hessian_loss", th, X, y)

    def per_path(fn):
        return jax.jit(jax.vmap(fn, (0, None, None, None)))

    out = {
        "drift": per_path(lambda th, X, y, eta: sme(2, X, y).drift(th, eta)),
        "drift_order1": per_path(lambda th, X, y, eta: sme(1, X, y).drift(th, eta)),
        "diffusion": per_path(lambda th, X, y, eta: sme(2, X, y).factor(th)),
        "stratonovich": per_path(lambda th, X, y, eta: sme(2, X, y).stratonovich_correction(th, eta)),
        "trace_hessian": jax.jit(jax.vmap(lambda th, X, y, eta: trace(th, X, y), (0, None, None, None))),
        "grad_trace_hessian": jax.jit(
            jax.vmap(lambda th, X, y, eta: grad_trace(th, X, y), (0, None, None, None))
        ),
    }
    return out, t1 - t0, t2 - t1


def _autodiff_functions(model, noise, X, y):
    """Hand-written autodiff of the same quantities (what a user writes with Problem and jax)."""
    prob = sd.Problem(model, X, y)

    def drift(th, eta):
        g, hg = jax.jvp(prob.grad, (th,), (prob.grad(th),))
        return -(g + (eta / 2) * hg)

    def diffusion(th, eta):
        return noise.covariance_factor(prob, th)

    def stratonovich(th, eta):
        A = noise.covariance_factor(prob, th)
        dA = jax.jacfwd(lambda t: noise.covariance_factor(prob, t))(th)
        return -(eta / 2) * jnp.einsum("ijk,kj->i", dA, A)

    def trace(th):
        return jnp.trace(jax.hessian(prob.loss)(th))

    v = lambda f: jax.jit(jax.vmap(f, (0, None)))  # noqa: E731
    return {
        "drift": v(drift),
        "drift_order1": v(lambda th, eta: -prob.grad(th)),
        "diffusion": v(diffusion),
        "stratonovich": v(stratonovich),
        "trace_hessian": v(lambda th, eta: trace(th)),
        "grad_trace_hessian": v(lambda th, eta: jax.grad(trace)(th)),
    }


def _report(rows, head, q, ts, ta=None, ratio=None):
    """Append one table row (autodiff time and ratio None where not timed) and print it."""
    rows.append(
        dict(
            head, quantity=q, symbolic_us=ts * 1e6, autodiff_us=None if ta is None else ta * 1e6, ratio=ratio
        )
    )
    auto_txt = f"{'n/a':>12} {'n/a':>6}" if ta is None else f"{ta * 1e6:>12.1f} {ratio:>6.2f}"
    print(
        f"{str((head['p'], head['m'])):>8} {head['d']:>5} {head['derive_s']:>9.2f} {head['codegen_s']:>9.2f} "
        f"{head['compile_s']:>9.2f} {q:>19} {ts * 1e6:>12.1f} {auto_txt}"
    )


def run(
    quick: bool = False,
    n: int | None = None,
    n_paths: int | None = None,
    repeats: int | None = None,
    force_symbolic: bool = False,
    sizes: list[tuple[int, int]] | None = None,
):
    """Print one row per size and quantity; return the rows and the worst drift ratio at d >= 100
    (all sizes if none that large was run).

        Sizes whose unit template exceeds MAX_SYMBOLIC_PARAMS report the API's numeric fallback unless
        ``force_symbolic`` (then they are derived anyway: minutes at (50, 20)).
    """
    jax.config.update("jax_enable_x64", True)
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    n = n or (16 if quick else 64)
    n_paths = n_paths or (4 if quick else 32)
    repeats = repeats or (5 if quick else 50)
    noise = sd.MinibatchNoise(8 if n >= 8 else 1, "with_replacement")
    rows, worst, worst_drift = [], 0.0, {True: 0.0, False: 0.0}
    print(
        f"two-layer tanh net, n = {n} examples, {n_paths} paths vmapped (/8 for d > 120), float64, "
        f"medians of {repeats} paired rounds"
    )
    print(
        f"{'(p,m)':>8} {'d':>5} {'derive_s':>9} {'codegen_s':>9} {'compile_s':>9} {'quantity':>19} "
        f"{'symbolic_us':>12} {'autodiff_us':>12} {'ratio':>6}"
    )
    for p, m in sizes:
        model = sd.TwoLayerNetwork(p, m, "tanh")
        kx, ky, kt = jax.random.split(jax.random.key(0), 3)
        X = jax.random.normal(kx, (n, p), jnp.float64)
        y = jax.random.normal(ky, (n,), jnp.float64)
        # Fewer paths at large d: the autodiff baselines build d × d Hessians and d × n × d Jacobians per path.
        paths = n_paths if model.n_params <= 120 else max(1, n_paths // 8)
        theta = 0.5 * jax.random.normal(kt, (paths, model.n_params), jnp.float64)
        eta = jnp.asarray(0.05)
        q_unit = p + 1
        if q_unit > sy.MAX_SYMBOLIC_PARAMS and not force_symbolic:
            # What the API does here: derive_sme(..., symbolic="auto") falls back to autodiff, says so.
            sme = sy.derive_sme(sd.Problem(model, X, y), noise, 2)
            print(f"{str((p, m)):>8} {model.n_params:>5}  numeric fallback ({sme.reason})")
            rows.append(dict(p=p, m=m, d=model.n_params, quantity="fallback", is_symbolic=sme.is_symbolic))
            continue
        sym, t_derive, t_codegen = _symbolic_functions(model, noise, sy.DEFAULT_BACKEND, X, y)
        t0 = time.perf_counter()
        # The five functions of the SME and the regularizer (drift of order 1 compiled after, untimed).
        sym_out = {
            q: jax.block_until_ready(f(theta, X, y, eta)) for q, f in sym.items() if q != "drift_order1"
        }
        t_compile = time.perf_counter() - t0
        sym_out["drift_order1"] = sym["drift_order1"](theta, X, y, eta)
        auto = _autodiff_functions(model, noise, X, y)
        head = dict(p=p, m=m, d=model.n_params, derive_s=t_derive, codegen_s=t_codegen, compile_s=t_compile)
        for q in sym:
            if q in HEAVY and model.n_params > MAX_HEAVY_D:
                _report(rows, head, q, _median_time(sym[q], theta, X, y, eta, repeats=repeats))
                continue
            a = auto[q](theta, eta)
            if q == "diffusion":
                np.testing.assert_allclose(
                    sym_out[q] @ jnp.swapaxes(sym_out[q], 1, 2),
                    a @ jnp.swapaxes(a, 1, 2),
                    rtol=1e-8,
                    atol=1e-10,
                )
            else:
                np.testing.assert_allclose(sym_out[q], a, rtol=1e-8, atol=1e-10)
            copies = DRIFT_COMPILES if q.startswith("drift") else 1
            pairs = [
                (
                    functools.partial(_call, _fresh(sym[q]) if c else sym[q], theta, X, y, eta),
                    functools.partial(_call, _fresh(auto[q]) if c else auto[q], theta, eta),
                )
                for c in range(copies)
            ]
            ts, ta, ratio = _paired(pairs, repeats)
            worst = max(worst, ratio)
            if q.startswith("drift"):
                large = model.n_params >= 100
                worst_drift[large] = max(worst_drift[large], ratio)
            _report(rows, head, q, ts, ta, ratio)
    print("backends on the order-2 drift (derive + codegen + first compile, evaluation):")
    for p, m in sizes:
        if p + 1 > sy.MAX_SYMBOLIC_PARAMS and not force_symbolic:
            continue
        model = sd.TwoLayerNetwork(p, m, "tanh")
        X = jax.random.normal(jax.random.key(1), (n, p), jnp.float64)
        y = jnp.zeros(n)
        paths = n_paths if model.n_params <= 120 else max(1, n_paths // 8)
        theta = 0.5 * jax.random.normal(jax.random.key(2), (paths, model.n_params), jnp.float64)
        line = []
        for backend in sy.BACKENDS:
            t0 = time.perf_counter()
            k = sy.SymbolicKernels(sy.symbolic_model(model), backend)
            sme = sd.SME(sd.Problem(model, X, y, derivatives=sy.SymbolicDerivatives.from_kernels(k)), None, 2)
            f = jax.jit(jax.vmap(lambda th, X, y, eta, sme=sme: sme.drift(th, eta), (0, None, None, None)))
            jax.block_until_ready(f(theta, X, y, 0.05))
            setup = time.perf_counter() - t0
            te = _median_time(f, theta, X, y, 0.05, repeats=repeats)
            line.append(f"{backend}: {setup:.2f} s, {te * 1e6:.1f} us")
        print(f"{str((p, m)):>8}  " + "  |  ".join(line))
    headline = worst_drift[True] if worst_drift[True] > 0 else worst_drift[False]
    print(f"worst_ratio_any_quantity={worst:.2f}")
    print(f"ratio_vs_autodiff={headline:.2f}")
    return rows, headline


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small sizes, few repeats")
    parser.add_argument("--sizes", help="comma-separated p x m, e.g. 10x10,20x20 (default: all)")
    parser.add_argument("--repeats", type=int, help="paired timing rounds (default 50; quick 5)")
    parser.add_argument("--n-paths", type=int, help="paths vmapped (default 32; quick 4)")
    parser.add_argument(
        "--force-symbolic",
        action="store_true",
        help="derive beyond MAX_SYMBOLIC_PARAMS (minutes at (50, 20))",
    )
    args = parser.parse_args()
    chosen = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")] if args.sizes else None
    run(
        quick=args.quick,
        repeats=args.repeats,
        n_paths=args.n_paths,
        sizes=chosen,
        force_symbolic=args.force_symbolic,
    )
