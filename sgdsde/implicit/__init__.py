"""Implicit regularization: stationary points of L + λR, verdicts on SGD/SDE runs, the limiting flow."""

from .._regularizers import (
    AbstractRegularizer as AbstractRegularizer,
    HessianTraceRegularizer as HessianTraceRegularizer,
    OutputGradientNormRegularizer as OutputGradientNormRegularizer,
    TraceLogRegularizer as TraceLogRegularizer,
    effective_lambda as effective_lambda,
)
from ._deep_matrix import (
    effective_rank as effective_rank,
    end_to_end_velocity as end_to_end_velocity,
    singular_value_velocity as singular_value_velocity,
)
from ._distillation import (
    DistillationRounds as DistillationRounds,
    TrainedDistillation as TrainedDistillation,
    budget_c as budget_c,
    collapse_bounds as collapse_bounds,
    gd_contraction as gd_contraction,
    label_noise_rounds_msd as label_noise_rounds_msd,
    self_distillation as self_distillation,
    train_self_distillation as train_self_distillation,
)
from ._flow import (
    LimitingFlow as LimitingFlow,
    ProjectionError as ProjectionError,
    limiting_flow as limiting_flow,
)
from ._hypentropy import (
    KernelRichLimit as KernelRichLimit,
    hypentropy as hypentropy,
    kernel_rich_limit as kernel_rich_limit,
    min_l1_interpolant as min_l1_interpolant,
    min_l2_interpolant as min_l2_interpolant,
)
from ._lasso import (
    LassoSolution as LassoSolution,
    kkt_residual as kkt_residual,
    label_noise_lasso as label_noise_lasso,
    weighted_lasso as weighted_lasso,
)
from ._modified_flow import (
    epoch_fixed_point as epoch_fixed_point,
    expected_epoch as expected_epoch,
    modified_flow as modified_flow,
    modified_loss as modified_loss,
    modified_loss_argmin as modified_loss_argmin,
)
from ._prediction import (
    Phase as Phase,
    Prediction as Prediction,
    predict as predict,
    predict_phases as predict_phases,
    regularizer_observables as regularizer_observables,
)
from ._stationary import (
    StationaryPoint as StationaryPoint,
    StationaryPointError as StationaryPointError,
    stationary_point as stationary_point,
)
from ._study import (
    ConvergenceStudy as ConvergenceStudy,
    PowerFit as PowerFit,
    convergence_study as convergence_study,
    fit_power_law as fit_power_law,
)
from ._verdict import (
    ConvergenceReport as ConvergenceReport,
    MethodVerdict as MethodVerdict,
    check_convergence as check_convergence,
)
