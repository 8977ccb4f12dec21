"""Analysis: exact moments for quadratic problems (constant or affine noise), weak errors with standard errors,
fitted orders."""

from .affine import AffineNoise as AffineNoise
from .affine import QuadraticForm as QuadraticForm
from .affine import quadratic_form as quadratic_form
from .quadratic import (
    Moments as Moments,
)
from .quadratic import (
    sde_moments as sde_moments,
)
from .quadratic import (
    sgd_moments as sgd_moments,
)
from .quadratic import (
    sme_drift_matrix as sme_drift_matrix,
)
from .quadratic import (
    stationary_covariance_sde as stationary_covariance_sde,
)
from .quadratic import (
    stationary_covariance_sgd as stationary_covariance_sgd,
)
from .quadratic import svag_moments as svag_moments
from .resetting import OptimalRate as OptimalRate
from .resetting import fpt_moments as fpt_moments
from .resetting import mfpt_with_resetting as mfpt_with_resetting
from .resetting import optimal_resetting_rate as optimal_resetting_rate
from .resetting import peclet as peclet
from .weak import OrderFit as OrderFit
from .weak import WeakError as WeakError
from .weak import fit_order as fit_order
from .weak import weak_error as weak_error
