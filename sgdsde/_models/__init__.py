from .activations import ACTIVATIONS as ACTIVATIONS, get_activation as get_activation
from .base import AbstractModel as AbstractModel
from .function import FunctionModel as FunctionModel
from .linear import (
    AbstractLinearPredictor as AbstractLinearPredictor,
    DiagonalLinearNetwork as DiagonalLinearNetwork,
    LinearRegression as LinearRegression,
)
from .matrix import DeepMatrixFactorization as DeepMatrixFactorization
from .normalized import NormalizedTwoLayerNetwork as NormalizedTwoLayerNetwork
from .polynomial import PolynomialCurve as PolynomialCurve
from .two_layer import TwoLayerNetwork as TwoLayerNetwork
from .units import Units as Units
