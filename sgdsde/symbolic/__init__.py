"""The symbolic layer (the only part of sgdsde that imports sympy): models as per-example expressions, a
derivative back end of Problem (``SymbolicDerivatives``) and SGD's SME on it (``derive_sme``), the implicit
regularizers, the sympy → JAX seam, and their LaTeX."""

from .._models import Units as Units
from ._codegen import BACKENDS as BACKENDS, DEFAULT_BACKEND as DEFAULT_BACKEND, to_jax as to_jax
from ._expressions import (
    ExpressionModel as ExpressionModel,
    SymbolicModel as SymbolicModel,
    symbolic_model as symbolic_model,
)
from ._kernels import (
    MAX_SYMBOLIC_PARAMS as MAX_SYMBOLIC_PARAMS,
    SymbolicKernels as SymbolicKernels,
    kernels as kernels,
)
from ._regularizers import Regularizers as Regularizers, derive_regularizers as derive_regularizers
from ._sme import SymbolicDerivatives as SymbolicDerivatives, derive_sme as derive_sme
