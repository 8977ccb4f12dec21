from .base import AbstractGradientNoise as AbstractGradientNoise, NoNoise as NoNoise
from .gaussian import GaussianNoise as GaussianNoise, SphericalGaussianNoise as SphericalGaussianNoise
from .minibatch import LabelNoise as LabelNoise, MinibatchNoise as MinibatchNoise
from .multiplicative import MultiplicativeNoise as MultiplicativeNoise
from .sampling import SAMPLINGS as SAMPLINGS
