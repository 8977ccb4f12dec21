"""sgdsde: SGD's noise, the SDEs that approximate it, and the implicit regularizers they imply."""

from ._data import (
    RegressionData as RegressionData,
    sparse_regression as sparse_regression,
    teacher_network as teacher_network,
)
from ._ensemble import AbstractStepper as AbstractStepper
from ._models import (
    AbstractLinearPredictor as AbstractLinearPredictor,
    AbstractModel as AbstractModel,
    DiagonalLinearNetwork as DiagonalLinearNetwork,
    LinearRegression as LinearRegression,
    TwoLayerNetwork as TwoLayerNetwork,
)
from ._noise import (
    AbstractGradientNoise as AbstractGradientNoise,
    GaussianNoise as GaussianNoise,
    LabelNoise as LabelNoise,
    MinibatchNoise as MinibatchNoise,
    MultiplicativeNoise as MultiplicativeNoise,
    NoNoise as NoNoise,
    SphericalGaussianNoise as SphericalGaussianNoise,
)
from ._problem import Problem as Problem, quadratic_problem as quadratic_problem
from ._results import EnsembleResult as EnsembleResult
from ._schedules import ConstantLR as ConstantLR, CosineLR as CosineLR, StepDecayLR as StepDecayLR
from ._sgd import simulate_sgd as simulate_sgd

__version__ = "0.1.0"
