"""SGD's SDEs (SME of order 1 and 2) simulated with diffrax on SGD's clock."""

from .base import AbstractSDE as AbstractSDE
from .base import FunctionSDE as FunctionSDE
from .simulate import SDEStepper as SDEStepper
from .simulate import simulate_sde as simulate_sde
from .sme import SME as SME
from .solvers import SOLVERS as SOLVERS
from .solvers import PlatenWeak2 as PlatenWeak2
from .solvers import WeakIncrement as WeakIncrement
from .svag import simulate_svag as simulate_svag
from .svag import svag_coefficients as svag_coefficients
