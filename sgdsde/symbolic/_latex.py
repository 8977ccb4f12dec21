# ruff: noqa: E501 (LaTeX formulas read better unbroken)
"""LaTeX of derived drifts, diffusions and regularizers, printed from the expressions sympy derived."""

from __future__ import annotations

from .._losses import SquaredLoss
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
    if U.n_outputs > 1:
        units = rf"f_k = \sum_{{j:\,o_j = k}} u(\theta_{{I_j}}; x_{{J_j}}),\ k = 1..{U.n_outputs}"
        lines.append(rf"{units},\quad u = {latex(U.expr)}")
    elif U.n_units > 1:
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


# any loss ℓ(f, y) (K outputs: J_i = ∂f/∂θ is K × d; LOSS-1, LOSS-7)
GENERAL_DRIFT = {
    1: r"b(\theta) = -\nabla L(\theta) = -\frac{1}{n}\sum_{i=1}^{n} J_i^T\,\partial_f\ell\big(f(\theta; x_i), y_i\big),\quad J_i = \partial_\theta f(\theta; x_i)",
    2: (
        r"b(\theta) = -\nabla L - \frac{\eta}{2}\nabla^2 L\,\nabla L,"
        r"\quad \nabla^2 L\, v = \frac1n\sum_i \Big(J_i^T\,\partial_f^2\ell_i\,J_i v + \sum_k \partial_{f_k}\ell_i\,\nabla^2 f_{ik}\, v\Big)"
    ),
}

# a biased noise (label flips: FLIP-1) drifts along its mean m = E g̃, not ∇L (SME-6)
BIASED_DRIFT = {
    1: r"b(\theta) = -m(\theta),\quad m = E\,\tilde g \ne \nabla L\ \text{(the noise's bias } m - \nabla L\text{)}",
    2: r"b(\theta) = -m - \frac{\eta}{2}(\partial_\theta m)\,m,\quad m = E\,\tilde g \ne \nabla L",
}


def drift_latex(sme) -> str:
    """The drift of ``sme``'s order for its loss and noise: the squared loss's residual form, any loss's
    ∂ℓ form, or the biased noise's mean."""
    if not sme.noise.unbiased:
        return BIASED_DRIFT[sme.order]
    if isinstance(sme.problem.loss_fn, SquaredLoss):
        return DRIFT[sme.order]
    return GENERAL_DRIFT[sme.order]


def sme_latex(sme) -> str:
    """An SME's equation: the drift of its order, the noise model's own A(θ), the correction, the model."""
    from ._sme import SymbolicDerivatives

    d = sme.problem.derivatives
    parts = [
        r"d\theta_t = b(\theta_t)\,dt + \sqrt{\eta}\,A(\theta_t)\,dW_t",
        drift_latex(sme),
        sme.problem.loss_fn.latex(),
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
