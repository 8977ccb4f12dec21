"""sgdsde: SGD's noise, the SDEs that approximate it, and the implicit regularizers they imply.

The public API, by concept (submodules: ``sgdsde.analysis``, ``sgdsde.implicit``, ``sgdsde.symbolic``):
problems and losses, models, data, noise models, schedules, the three simulators and their options, results,
and the SDE classes.
"""

from . import (  # symbolic stays lazy: it imports sympy
    analysis as analysis,
    data as data,
    implicit as implicit,
)
from ._curvature import Accuracy as Accuracy, HutchinsonTrace as HutchinsonTrace, Sharpness as Sharpness
from ._derivatives import Autodiff as Autodiff
from ._ensemble import AbstractStepper as AbstractStepper, RunPlan as RunPlan
from ._events import (
    AbstractEvent as AbstractEvent,
    AbstractReport as AbstractReport,
    AbstractStepEvent as AbstractStepEvent,
    RunInfo as RunInfo,
)
from ._first_passage import FirstPassage as FirstPassage, FirstPassageReport as FirstPassageReport
from ._losses import (
    AbstractLoss as AbstractLoss,
    CrossEntropyLoss as CrossEntropyLoss,
    LogisticLoss as LogisticLoss,
    SquaredLoss as SquaredLoss,
)
from ._method import AbstractMethod as AbstractMethod, simulate as simulate
from ._models import (
    AbstractModel as AbstractModel,
    DeepMatrixFactorization as DeepMatrixFactorization,
    DiagonalLinearNetwork as DiagonalLinearNetwork,
    FunctionModel as FunctionModel,
    LinearRegression as LinearRegression,
    NormalizedTwoLayerNetwork as NormalizedTwoLayerNetwork,
    PolynomialCurve as PolynomialCurve,
    TwoLayerNetwork as TwoLayerNetwork,
)
from ._noise import (
    AbstractGradientNoise as AbstractGradientNoise,
    AbstractSampling as AbstractSampling,
    AbstractSDENoise as AbstractSDENoise,
    BatchNormNoise as BatchNormNoise,
    FullGradientLabelNoise as FullGradientLabelNoise,
    GaussianNoise as GaussianNoise,
    LabelFlipNoise as LabelFlipNoise,
    LabelNoise as LabelNoise,
    MinibatchNoise as MinibatchNoise,
    MultiplicativeNoise as MultiplicativeNoise,
    NoiseType as NoiseType,
    NoNoise as NoNoise,
    PreactivationNoise as PreactivationNoise,
    Shuffled as Shuffled,
    SphericalGaussianNoise as SphericalGaussianNoise,
    WithoutReplacement as WithoutReplacement,
    WithReplacement as WithReplacement,
)
from ._observables import AbstractObservable as AbstractObservable
from ._optimizers import (
    AbstractOptimizer as AbstractOptimizer,
    Adam as Adam,
    Momentum as Momentum,
    Optax as Optax,
    RMSprop as RMSprop,
)
from ._options import Ensemble as Ensemble, Output as Output, Record as Record
from ._problem import Problem as Problem, quadratic_problem as quadratic_problem
from ._resetting import BestSoFar as BestSoFar, Resetting as Resetting
from ._results import EnsembleResult as EnsembleResult
from ._schedules import ConstantLR as ConstantLR, CosineLR as CosineLR, StepDecayLR as StepDecayLR
from ._sde import (
    SDE as SDE,
    SME as SME,
    SVAG as SVAG,
    AbstractSDE as AbstractSDE,
    AdamSDE as AdamSDE,
    FunctionSDE as FunctionSDE,
    MomentumSME as MomentumSME,
    PlatenWeak2 as PlatenWeak2,
    RMSpropSDE as RMSpropSDE,
    simulate_sde as simulate_sde,
    simulate_svag as simulate_svag,
)
from ._sde.adaptive import Adaptive as Adaptive  # a stepping: one file in _sde/, one line here
from ._sde.fixed import Fixed as Fixed
from ._sde.increments import (  # an increments option: one class in _sde/increments.py, one line here
    CoupledToSGD as CoupledToSGD,
    Gaussian as Gaussian,
    TwoPoint as TwoPoint,
)
from ._sgd import SGD as SGD, replay_draws as replay_draws, simulate_sgd as simulate_sgd
from ._sweep import SweepResult as SweepResult, sweep as sweep

__version__ = "0.1.0"

# the data generators live in ``sgdsde.data``; their older top-level spellings keep working
_MOVED_TO_DATA = (
    "double_well_data",
    "matrix_sensing_data",
    "noisy_teacher_classification",
    "sparse_regression",
    "teacher_network",
    "two_pattern_data",
)


def __getattr__(name: str):
    if name in _MOVED_TO_DATA:
        return getattr(data, name)
    raise AttributeError(f"module 'sgdsde' has no attribute {name!r}")
