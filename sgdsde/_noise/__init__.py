from .base import AbstractGradientNoise as AbstractGradientNoise
from .base import NoNoise as NoNoise
from .gaussian import GaussianNoise as GaussianNoise
from .gaussian import SphericalGaussianNoise as SphericalGaussianNoise
from .minibatch import LabelNoise as LabelNoise
from .minibatch import MinibatchNoise as MinibatchNoise
from .multiplicative import MultiplicativeNoise as MultiplicativeNoise
from .sampling import SAMPLINGS as SAMPLINGS
