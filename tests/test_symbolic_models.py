"""A model brings its own symbolic form (``AbstractModel.sympy_units``) or says it has none; the symbolic layer
asks the model, so a new model is one file; the numeric core (SME.latex included) runs without sympy.

Deterministic checks in float64: generated code and autodiff evaluate the same formula in different orders, so
they agree to rounding (RTOL/ATOL as in tests/test_symbolic.py: ~1e3 ulps of the quantities' scale).
"""

import ast
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import sgdsde as sd
import sgdsde.symbolic as sy
from sgdsde.symbolic._functions import diff  # internal: the package's sympy diff
from sgdsde.symbolic._kernels import UNIT_KERNELS  # internal: the kernel table checked here

ROOT = pathlib.Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-10, 1e-11
N, P = 6, 3


class TanhFeatures(sd.AbstractModel):
    """A model the package does not know: $f(\\theta; x) = \\sum_j a_j \\tanh(b_j x_j)$, θ = (a, b), with its
    symbolic form as p units $u = a\\tanh(b\\,\\xi)$ — defined here, touching no package file."""

    dim: int

    @property
    def n_params(self):
        return 2 * self.dim

    @property
    def input_dim(self):
        return self.dim

    def output(self, theta, x):
        a, b = theta[: self.dim], theta[self.dim :]
        return jnp.dot(a, jnp.tanh(b * x))

    def param_names(self):
        return [f"a_{j}" for j in range(self.dim)] + [f"b_{j}" for j in range(self.dim)]

    def sympy_units(self):
        a, b, xi = sp.symbols("a b xi", real=True)
        p = self.dim
        return sy.Units(
            a * sp.tanh(b * xi),
            (a, b),
            (xi,),
            (),
            tuple((j, p + j) for j in range(p)),
            tuple((j,) for j in range(p)),
            ((),) * p,
        )


class NoForm(sd.AbstractModel):
    """$f(\\theta; x) = \\theta_0 \\sin(\\theta^T x)$ with no symbolic form (the base class's default)."""

    dim: int

    @property
    def n_params(self):
        return self.dim

    @property
    def input_dim(self):
        return self.dim

    def output(self, theta, x):
        return theta[0] * jnp.sin(jnp.dot(theta, x))

    def param_names(self):
        return [f"t_{j}" for j in range(self.dim)]


class WrongForm(NoForm):
    def sympy_units(self):
        return sp.Symbol("t_0")


def _data(model, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(k1, (N, P), jnp.float64)
    y = jax.random.normal(k2, (N,), jnp.float64)
    theta = 0.8 * jax.random.normal(k3, (model.n_params,), jnp.float64)
    return sd.Problem(model, X, y), theta


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("noise", ["minibatch", "label"])
def test_a_new_model_with_its_own_symbolic_form_runs_through_derive_sme(order, noise):
    """A model defined outside the package, with its own ``sympy_units``, is derived by sympy: its expression
    is f in param_names() order, and derive_sme's drift, factor and Stratonovich correction equal the autodiff
    SME's. [theory: SYM-1, SYM-2]"""
    model = TanhFeatures(P)
    problem, theta = _data(model)
    sm = sy.symbolic_model(model)
    assert sm.param_names() == model.param_names() and sm.units.n_units == P
    f = sy.to_jax(sm.expr, [sm.params, sm.inputs])
    close(jax.vmap(f, in_axes=(None, 0))(theta, problem.X), problem.outputs(theta))

    nz = sd.MinibatchNoise(2) if noise == "minibatch" else sd.LabelNoise(0.6)
    symbolic, numeric = sy.derive_sme(problem, nz, order), sd.SME(problem, nz, order)
    assert symbolic.is_symbolic and not numeric.is_symbolic
    eta = 0.2
    for name in ("drift", "stratonovich_correction"):
        close(getattr(symbolic, name)(theta, eta), getattr(numeric, name)(theta, eta))
    close(symbolic.factor(theta), numeric.factor(theta))
    tex = symbolic.latex()
    assert r"\tanh" in tex and "numeric" not in tex


def test_a_model_without_a_symbolic_form_is_refused_by_name():
    """A model that defines no ``sympy_units`` gets a ValueError from derive_sme naming the model and the
    autodiff back end; with symbolic=False (autodiff kernels) it still gets an SME, with autodiff's drift.
    A ``sympy_units`` that returns something else than Units is refused naming the method. [theory: SYM-1]"""
    problem, theta = _data(NoForm(P))
    with pytest.raises(ValueError, match=r"model NoForm has no symbolic form.*autodiff"):
        sy.derive_sme(problem, sd.MinibatchNoise(2), 1)
    with pytest.raises(ValueError, match=r"model NoForm has no symbolic form"):
        sy.derive_regularizers(NoForm(P))
    sme = sy.derive_sme(problem, sd.MinibatchNoise(2), 2, symbolic=False)
    assert not sme.is_symbolic and "symbolic=False" in sme.reason
    close(sme.drift(theta, 0.2), sd.SME(problem, sd.MinibatchNoise(2), 2).drift(theta, 0.2))
    with pytest.raises(ValueError, match=r"WrongForm.sympy_units must return a sgdsde.symbolic.Units"):
        sy.derive_sme(_data(WrongForm(P))[0], None, 1)


def test_unit_kernels_are_derived_by_their_own_derivation():
    """Each unit kernel name maps to its derivation (an explicit table, not a name lookup): u, ∇u, diag ∇²u,
    Δu and ∇Δu of the new model's template equal sympy's derivatives taken here; an unknown name is refused
    listing the names. [theory: SYM-2]"""
    k = sy.SymbolicKernels(sy.symbolic_model(TanhFeatures(P)))
    assert set(type(k)._derivations) == set(UNIT_KERNELS)
    u, (a, b) = k.units.expr, k.units.params
    grad = [diff(u, a), diff(u, b)]
    diag = [diff(grad[0], a), diff(grad[1], b)]
    lap = diag[0] + diag[1]
    want = {
        "u": u,
        "grad_u": grad,
        "diag_hessian_u": diag,
        "laplacian_u": lap,
        "grad_laplacian_u": [diff(lap, a), diff(lap, b)],
    }
    for name, w in want.items():
        got = k.expr(name)
        pairs = zip(got, w, strict=True) if isinstance(w, list) else [(got, w)]
        for g, e in pairs:
            assert sp.simplify(g - e) == 0, name
    with pytest.raises(ValueError, match="unit kernel must be one of"):
        k.expr("hessian_u")


def test_sme_latex_needs_no_sympy():
    """The numeric core, SME.latex included, runs without importing sympy: the SME's LaTeX is assembled from
    the strings its loss, noise and derivatives back end give."""
    code = (
        "import sys, jax.numpy as jnp, sgdsde as sd\n"
        "p = sd.Problem(sd.TwoLayerNetwork(2, 2), jnp.ones((4, 2)), jnp.zeros(4))\n"
        "tex = sd.SME(p, sd.LabelNoise(0.5), 2).latex()\n"
        "assert 'numeric (autodiff) derivatives of TwoLayerNetwork' in tex, tex\n"
        "assert 'sympy' not in sys.modules, 'sympy imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _imported_modules(path: pathlib.Path, package: str) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("folder", ["_sde", "_noise", "_models", "_losses"])
def test_the_numeric_core_does_not_import_the_symbolic_layer(folder):
    """No import cycle between the numeric core and sgdsde.symbolic, hidden or not: the symbolic layer imports
    the core, never the reverse (models, losses and the SME give their forms and strings; sympy itself is
    imported only inside the methods that build sympy expressions)."""
    for path in sorted((ROOT / "sgdsde" / folder).glob("*.py")):
        bad = sorted(
            m for m in _imported_modules(path, f"sgdsde.{folder}") if m.startswith("sgdsde.symbolic")
        )
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
