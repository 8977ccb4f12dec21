from .base import AbstractLoss as AbstractLoss
from .cross_entropy import CrossEntropyLoss as CrossEntropyLoss
from .logistic import LogisticLoss as LogisticLoss
from .squared import SquaredLoss as SquaredLoss
