from .base import (
    AbstractGradientNoise as AbstractGradientNoise,
    AbstractSDENoise as AbstractSDENoise,
    NoiseType as NoiseType,
    NoNoise as NoNoise,
    require_sde_side as require_sde_side,
)
from .batch_norm import BatchNormNoise as BatchNormNoise
from .full_gradient_label import FullGradientLabelNoise as FullGradientLabelNoise
from .gaussian import GaussianNoise as GaussianNoise, SphericalGaussianNoise as SphericalGaussianNoise
from .label_flip import LabelFlipNoise as LabelFlipNoise
from .minibatch import LabelNoise as LabelNoise, MinibatchNoise as MinibatchNoise
from .multiplicative import MultiplicativeNoise as MultiplicativeNoise
from .preactivation import PreactivationNoise as PreactivationNoise
from .sampling import (
    SAMPLINGS as SAMPLINGS,
    AbstractSampling as AbstractSampling,
    Shuffled as Shuffled,
    WithoutReplacement as WithoutReplacement,
    WithReplacement as WithReplacement,
)
