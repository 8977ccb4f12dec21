# ruff: noqa: E501 (LaTeX formulas read better unbroken)
"""LaTeX of derived drifts, diffusions and regularizers, printed from the expressions sympy derived."""

from __future__ import annotations

from ._functions import latex
from ._kernels import SymbolicKernels

# Full expressions of f are printed only up to this many parameters; beyond, the unit template.
MAX_PRINTED_PARAMS = 24


def model_latex(k, model=None) -> str:
    """f and its unit template u (f = Σ_j u over the unit blocks) with ∇u, or the numeric note."""
    if k is None:
        return rf"\text{{numeric (autodiff) derivatives of {type(model).__name__}}}"
    if not isinstance(k, SymbolicKernels):
        return rf"\text{{numeric (autodiff) kernels: {k.reason}}}"
    m = k.model
    lines = []
    if m.n_params <= MAX_PRINTED_PARAMS:
        lines.append(m.latex())
    U = m.units
    if U.n_units > 1:
        units = rf"f = \sum_{{j=1}}^{{{U.n_units}}} u(\theta_{{I_j}}; x_{{J_j}})"
        lines.append(rf"{units},\quad u = {latex(U.expr)}")
    lines.append(k.latex("grad_u"))
    return r" \\ ".join(lines)


DRIFT = {
    1: r"b(\theta) = -\nabla L(\theta) = -\frac{1}{n}\sum_{i=1}^{n} (f(\theta; x_i) - y_i)\,\nabla_\theta f(\theta; x_i)",
    2: (
        r"b(\theta) = -\nabla\Big(L + \frac{\eta}{4}\|\nabla L\|^2\Big) = -\nabla L - \frac{\eta}{2}\nabla^2 L\,\nabla L,"
        r"\quad \nabla^2 L\, v = \frac1n\sum_i \big(\nabla f_i\,\nabla f_i^T v + r_i \nabla^2 f_i\, v\big)"
    ),
}


def sme_latex(sme) -> str:
    """An SME's equation: the drift of its order, the noise model's own A(θ), the correction, the model."""
    from ._sme import SymbolicDerivatives

    d = sme.problem.derivatives
    parts = [
        r"d\theta_t = b(\theta_t)\,dt + \sqrt{\eta}\,A(\theta_t)\,dW_t",
        DRIFT[sme.order],
        sme.noise.latex(),
        r"\text{It\^o}\to\text{Stratonovich: } b \mapsto b - \frac{\eta}{2}\sum_j (\partial_\theta A_{\cdot j}) A_{\cdot j}",
        model_latex(d.kernels)
        if isinstance(d, SymbolicDerivatives)
        else model_latex(None, sme.problem.model),
    ]
    return " \\\\\n".join(parts)


REGULARIZERS = {
    "trace_hessian": r"\operatorname{tr}\nabla^2 L = \frac1n\sum_i \big(\|\nabla f_i\|^2 + r_i\,\Delta f_i\big)",
    "trace_gauss_newton": r"\operatorname{tr} G = \frac1n\sum_i \|\nabla f_i\|^2",
    "blanc": r"R_{\rm Blanc} = \sum_i \|\nabla f_i\|^2",
    "damian": r"R(\theta) = -\frac{1}{2\eta}\operatorname{tr}\log\Big(I - \frac{\eta}{2}\nabla^2 L(\theta)\Big),\quad \lambda = \frac{\eta\sigma^2}{B}",
    "damian_series": r"R = \sum_{k\ge1} \frac{\eta^{k-1}}{2^{k+1}k}\operatorname{tr}(\nabla^2 L)^k = \frac14\operatorname{tr}\nabla^2L + \frac{\eta}{16}\operatorname{tr}(\nabla^2L)^2 + \dots",
    "damian_gradient": r"\nabla R = \frac12\nabla^3 L\big[(2I - \eta\nabla^2 L)^{-1}\big]",
    "gd_modified_loss": r"\tilde L_{\rm GD} = L + \frac{\eta}{4}\|\nabla L\|^2",
    "smith_modified_loss": r"\tilde L_{\rm SGD} = L + \frac{\eta}{4m}\sum_{k=1}^{m}\|\nabla \hat L_k\|^2",
}


def regularizer_latex(reg, name: str) -> str:
    if name not in REGULARIZERS:
        raise ValueError(f"name must be one of {sorted(REGULARIZERS)}, got {name!r}")
    k = reg.kernels
    extra = ""
    if isinstance(k, SymbolicKernels) and name in ("trace_hessian", "damian", "damian_series"):
        extra = r" \\ " + k.latex("laplacian_u")
    return REGULARIZERS[name] + r" \\ " + model_latex(k) + extra
