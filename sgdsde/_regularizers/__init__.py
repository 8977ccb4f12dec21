"""Numeric implicit regularizers R(θ) (JAX autodiff): Damian's tr-log form, ¼ tr∇²L, Blanc's Σ‖∇fᵢ‖²."""

from .base import AbstractRegularizer as AbstractRegularizer
from .effective_lambda import effective_lambda as effective_lambda
from .gradient_norm import OutputGradientNormRegularizer as OutputGradientNormRegularizer
from .trace import HessianTraceRegularizer as HessianTraceRegularizer
from .trace_log import (
    TraceLogRegularizer as TraceLogRegularizer,
    trace_log_of_hessian as trace_log_of_hessian,
)
