"""SGD's SDEs (SME of order 1 and 2) simulated with diffrax on SGD's clock."""

from .adaptive_sdes import AdamSDE as AdamSDE, RMSpropSDE as RMSpropSDE
from .base import AbstractSDE as AbstractSDE, FunctionSDE as FunctionSDE
from .fixed import SDEStepper as SDEStepper
from .momentum import MomentumSME as MomentumSME
from .simulate import SDE as SDE, simulate_sde as simulate_sde
from .sme import SME as SME
from .solvers import SOLVERS as SOLVERS, PlatenWeak2 as PlatenWeak2, WeakIncrement as WeakIncrement
from .svag import SVAG as SVAG, simulate_svag as simulate_svag, svag_coefficients as svag_coefficients
