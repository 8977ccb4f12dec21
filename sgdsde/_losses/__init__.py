from .base import AbstractLoss as AbstractLoss, require_additive_label_noise as require_additive_label_noise
from .cross_entropy import CrossEntropyLoss as CrossEntropyLoss
from .logistic import LogisticLoss as LogisticLoss
from .squared import SquaredLoss as SquaredLoss
