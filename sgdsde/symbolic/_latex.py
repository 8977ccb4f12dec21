# ruff: noqa: E501 (LaTeX formulas read better unbroken)
"""LaTeX of the model's derived kernels and of the regularizers, printed from the expressions sympy derived (the
SME's equation is assembled in ``sgdsde/_sde/sme.py`` from these and the loss's and noise's own strings)."""

from __future__ import annotations

from .._losses import SquaredLoss
from ._functions import latex
from ._kernels import SymbolicKernels

# Full expressions of f are printed only up to this many parameters; beyond, the unit template.
MAX_PRINTED_PARAMS = 24


def model_latex(k) -> str:
    """f and its unit template u (f = Σ_j u over the unit blocks) with ∇u, or the numeric note."""
    if not isinstance(k, SymbolicKernels):
        return rf"\text{{numeric (autodiff) kernels: {k.reason}}}"
    m = k.model
    lines = []
    if m.n_params <= MAX_PRINTED_PARAMS:
        lines.append(m.latex())
    U = m.units
    if U.n_outputs > 1:
        units = rf"f_k = \sum_{{j:\,o_j = k}} u(\theta_{{I_j}}; x_{{J_j}}),\ k = 1..{U.n_outputs}"
        lines.append(rf"{units},\quad u = {latex(U.expr)}")
    elif U.n_units > 1:
        units = rf"f = \sum_{{j=1}}^{{{U.n_units}}} u(\theta_{{I_j}}; x_{{J_j}})"
        lines.append(rf"{units},\quad u = {latex(U.expr)}")
    lines.append(k.latex("grad_u"))
    return r" \\ ".join(lines)


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


# tr∇²L for any loss (K outputs: J_i is K × d; LOSS-7)
GENERAL_TRACE_HESSIAN = r"\operatorname{tr}\nabla^2 L = \frac1n\sum_i \Big(\operatorname{tr}\big(J_i^T\,\partial_f^2\ell_i\,J_i\big) + \sum_k \partial_{f_k}\ell_i\,\Delta f_{ik}\Big)"


def regularizer_latex(reg, name: str) -> str:
    """Regularizer ``name``'s formula for the kernels' loss, the loss (if not squared) and the model."""
    if name not in REGULARIZERS:
        raise ValueError(f"name must be one of {sorted(REGULARIZERS)}, got {name!r}")
    k = reg.kernels
    head = REGULARIZERS[name]
    if not isinstance(k.loss, SquaredLoss):
        head = (GENERAL_TRACE_HESSIAN if name == "trace_hessian" else head) + r" \\ " + k.loss.latex()
    extra = ""
    if isinstance(k, SymbolicKernels) and name in ("trace_hessian", "damian", "damian_series"):
        extra = r" \\ " + k.latex("laplacian_u")
    return head + r" \\ " + model_latex(k) + extra
