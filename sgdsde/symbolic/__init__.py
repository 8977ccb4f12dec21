"""The symbolic layer (the only part of sgdsde that imports sympy): models as per-example expressions,
derived SME drifts/diffusions and implicit regularizers, the sympy → JAX seam, and their LaTeX."""

from ._codegen import BACKENDS as BACKENDS
from ._codegen import DEFAULT_BACKEND as DEFAULT_BACKEND
from ._codegen import to_jax as to_jax
from ._expressions import (
    ExpressionModel as ExpressionModel,
)
from ._expressions import (
    SymbolicModel as SymbolicModel,
)
from ._expressions import (
    Units as Units,
)
from ._expressions import (
    symbolic_model as symbolic_model,
)
from ._kernels import (
    MAX_SYMBOLIC_PARAMS as MAX_SYMBOLIC_PARAMS,
)
from ._kernels import (
    AbstractKernels as AbstractKernels,
)
from ._kernels import (
    NumericKernels as NumericKernels,
)
from ._kernels import (
    SymbolicKernels as SymbolicKernels,
)
from ._kernels import (
    kernels as kernels,
)
from ._regularizers import (
    Regularizers as Regularizers,
)
from ._regularizers import (
    derive_regularizers as derive_regularizers,
)
from ._regularizers import (
    label_noise_lambda as label_noise_lambda,
)
from ._sme import SymbolicDerivatives as SymbolicDerivatives
from ._sme import derive_sme as derive_sme
