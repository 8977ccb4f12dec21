from .activations import ACTIVATIONS as ACTIVATIONS
from .activations import get_activation as get_activation
from .base import AbstractModel as AbstractModel
from .linear import (
    AbstractLinearPredictor as AbstractLinearPredictor,
)
from .linear import (
    DiagonalLinearNetwork as DiagonalLinearNetwork,
)
from .linear import (
    LinearRegression as LinearRegression,
)
from .two_layer import TwoLayerNetwork as TwoLayerNetwork
