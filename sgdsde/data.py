"""Data generators of the seeds' experiments: ``sgdsde.data.sparse_regression(...)`` and the rest, and one real
dataset, ``digits`` (scikit-learn's bundled 8 × 8 digits); each returns an equinox module with the arrays, X
and y among them."""

from ._data import (
    DigitsData as DigitsData,
    DoubleWellData as DoubleWellData,
    MatrixSensingData as MatrixSensingData,
    NoisyLabelData as NoisyLabelData,
    RegressionData as RegressionData,
    TwoPatternData as TwoPatternData,
    digits as digits,
    double_well_data as double_well_data,
    matrix_sensing_data as matrix_sensing_data,
    noisy_teacher_classification as noisy_teacher_classification,
    sparse_regression as sparse_regression,
    teacher_network as teacher_network,
    two_pattern_data as two_pattern_data,
)
