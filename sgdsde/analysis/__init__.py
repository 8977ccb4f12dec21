"""Analysis: exact moments for quadratic problems (constant or affine noise), weak errors with standard errors,
fitted orders, batch-size scaling rules."""

from ._affine import (
    AffineNoise as AffineNoise,
    QuadraticForm as QuadraticForm,
    quadratic_form as quadratic_form,
)
from ._escape import (
    eyring_kramers_time as eyring_kramers_time,
    mean_exit_time as mean_exit_time,
    sme_coefficients as sme_coefficients,
)
from ._momentum import (
    momentum_sgd_matrices as momentum_sgd_matrices,
    momentum_sgd_moments as momentum_sgd_moments,
    momentum_sgd_stationary_cov as momentum_sgd_stationary_cov,
    momentum_sme_matrices as momentum_sme_matrices,
    momentum_sme_moments as momentum_sme_moments,
    momentum_sme_stationary_cov as momentum_sme_stationary_cov,
)
from ._quadratic import (
    Moments as Moments,
    sde_moments as sde_moments,
    sgd_moments as sgd_moments,
    sme_drift_matrix as sme_drift_matrix,
    stationary_covariance_sde as stationary_covariance_sde,
    stationary_covariance_sgd as stationary_covariance_sgd,
    svag_moments as svag_moments,
)
from ._resetting import (
    OptimalRate as OptimalRate,
    fpt_moments as fpt_moments,
    latent_gradient_bias as latent_gradient_bias,
    mfpt_with_resetting as mfpt_with_resetting,
    optimal_resetting_rate as optimal_resetting_rate,
    peclet as peclet,
)
from ._scaling import (
    ScaledRun as ScaledRun,
    linear_scaling as linear_scaling,
    sqrt_scaling as sqrt_scaling,
)
from ._weak import (
    OrderFit as OrderFit,
    WeakError as WeakError,
    fit_order as fit_order,
    weak_error as weak_error,
)
