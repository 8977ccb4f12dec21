"""sgdsde: SGD's noise, the SDEs that approximate it, and the implicit regularizers they imply."""

from . import analysis as analysis  # noqa: E402  (symbolic stays lazy: sympy)
from . import implicit as implicit
from ._data import (
    RegressionData as RegressionData,
)
from ._data import (
    sparse_regression as sparse_regression,
)
from ._data import (
    teacher_network as teacher_network,
)
from ._ensemble import AbstractStepper as AbstractStepper
from ._losses import (
    AbstractLoss as AbstractLoss,
)
from ._losses import (
    CrossEntropyLoss as CrossEntropyLoss,
)
from ._losses import (
    LogisticLoss as LogisticLoss,
)
from ._losses import (
    SquaredLoss as SquaredLoss,
)
from ._models import (
    AbstractLinearPredictor as AbstractLinearPredictor,
)
from ._models import (
    AbstractModel as AbstractModel,
)
from ._models import (
    DiagonalLinearNetwork as DiagonalLinearNetwork,
)
from ._models import (
    LinearRegression as LinearRegression,
)
from ._models import (
    TwoLayerNetwork as TwoLayerNetwork,
)
from ._noise import (
    AbstractGradientNoise as AbstractGradientNoise,
)
from ._noise import (
    FullGradientLabelNoise as FullGradientLabelNoise,
)
from ._noise import (
    GaussianNoise as GaussianNoise,
)
from ._noise import (
    LabelFlipNoise as LabelFlipNoise,
)
from ._noise import (
    LabelNoise as LabelNoise,
)
from ._noise import (
    MinibatchNoise as MinibatchNoise,
)
from ._noise import (
    MultiplicativeNoise as MultiplicativeNoise,
)
from ._noise import (
    NoNoise as NoNoise,
)
from ._noise import (
    SphericalGaussianNoise as SphericalGaussianNoise,
)
from ._options import (
    Adaptive as Adaptive,
)
from ._options import (
    CoupledToSGD as CoupledToSGD,
)
from ._options import (
    Ensemble as Ensemble,
)
from ._options import (
    Fixed as Fixed,
)
from ._options import (
    Gaussian as Gaussian,
)
from ._options import (
    Output as Output,
)
from ._options import (
    Record as Record,
)
from ._options import (
    TwoPoint as TwoPoint,
)
from ._problem import Problem as Problem
from ._problem import quadratic_problem as quadratic_problem
from ._results import EnsembleResult as EnsembleResult
from ._schedules import ConstantLR as ConstantLR
from ._schedules import CosineLR as CosineLR
from ._schedules import StepDecayLR as StepDecayLR
from ._sde import (
    SME as SME,
)
from ._sde import (
    AbstractSDE as AbstractSDE,
)
from ._sde import (
    FunctionSDE as FunctionSDE,
)
from ._sde import (
    PlatenWeak2 as PlatenWeak2,
)
from ._sde import (
    simulate_sde as simulate_sde,
)
from ._sde import (
    simulate_svag as simulate_svag,
)
from ._sgd import simulate_sgd as simulate_sgd

__version__ = "0.1.0"
