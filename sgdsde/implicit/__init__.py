"""Implicit regularization: stationary points of L + λR, verdicts on SGD/SDE runs, the limiting flow."""

from .._regularizers import (
    AbstractRegularizer as AbstractRegularizer,
)
from .._regularizers import (
    HessianTraceRegularizer as HessianTraceRegularizer,
)
from .._regularizers import (
    OutputGradientNormRegularizer as OutputGradientNormRegularizer,
)
from .._regularizers import (
    TraceLogRegularizer as TraceLogRegularizer,
)
from .._regularizers import (
    effective_lambda as effective_lambda,
)
from ._flow import LimitingFlow as LimitingFlow
from ._flow import ProjectionError as ProjectionError
from ._flow import limiting_flow as limiting_flow
from ._lasso import (
    LassoSolution as LassoSolution,
)
from ._lasso import (
    kkt_residual as kkt_residual,
)
from ._lasso import (
    label_noise_lasso as label_noise_lasso,
)
from ._lasso import (
    weighted_lasso as weighted_lasso,
)
from ._prediction import Phase as Phase
from ._prediction import Prediction as Prediction
from ._prediction import predict as predict
from ._prediction import predict_phases as predict_phases
from ._prediction import regularizer_observables as regularizer_observables
from ._stationary import (
    StationaryPoint as StationaryPoint,
)
from ._stationary import (
    StationaryPointError as StationaryPointError,
)
from ._stationary import (
    stationary_point as stationary_point,
)
from ._verdict import (
    ConvergenceReport as ConvergenceReport,
)
from ._verdict import (
    MethodVerdict as MethodVerdict,
)
from ._verdict import (
    check_convergence as check_convergence,
)
