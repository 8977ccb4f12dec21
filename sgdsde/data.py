"""Data generators of the seeds' experiments: ``sgdsde.data.sparse_regression(...)`` and the rest (each returns
an equinox module with the arrays, X and y among them)."""

from ._data import (
    DoubleWellData as DoubleWellData,
    MatrixSensingData as MatrixSensingData,
    NoisyLabelData as NoisyLabelData,
    RegressionData as RegressionData,
    TwoPatternData as TwoPatternData,
    double_well_data as double_well_data,
    matrix_sensing_data as matrix_sensing_data,
    noisy_teacher_classification as noisy_teacher_classification,
    sparse_regression as sparse_regression,
    teacher_network as teacher_network,
    two_pattern_data as two_pattern_data,
)
