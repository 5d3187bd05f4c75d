"""Adding up what the reads return, per output row: sums, error breakdowns, distributions.

Distributions merge as sketch.merge does (counts added per bucket index), here over numpy
arrays with a dense bincount: the indexes of one output row span a few hundred to a few
thousand buckets, so counting into a dense vector beats sorting the concatenated pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from apps.metrics.catalog import SUM_COLUMNS
from apps.rollups.sketch import ZERO_INDEX

Distribution = tuple[np.ndarray, np.ndarray]
EMPTY: Distribution = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
# Wider than this (indexes far apart), a dense vector would waste memory: sort instead.
_DENSE_SPAN = 1 << 20


def zero_of(column: str) -> Any:
    sql_type = SUM_COLUMNS[column]
    return Decimal(0) if sql_type == "numeric" else 0.0 if sql_type == "double precision" else 0


def merge_distributions(parts: Sequence[Distribution]) -> Distribution:
    """One sorted (indexes, counts) distribution from many."""
    parts = [part for part in parts if part[0].size]
    if not parts:
        return EMPTY
    indexes = np.concatenate([part[0] for part in parts]) if len(parts) > 1 else parts[0][0]
    counts = np.concatenate([part[1] for part in parts]) if len(parts) > 1 else parts[0][1]
    zero = indexes == ZERO_INDEX
    zeros = int(counts[zero].sum())
    if zeros:
        indexes, counts = indexes[~zero], counts[~zero]
    if indexes.size == 0:
        merged = EMPTY
    else:
        low = int(indexes.min())
        if int(indexes.max()) - low < _DENSE_SPAN:
            dense = np.bincount(indexes - low, weights=counts)
            present = np.flatnonzero(dense)
            merged = (present + low, dense[present].astype(np.int64))
        else:
            unique, inverse = np.unique(indexes, return_inverse=True)
            merged = (unique, np.bincount(inverse, weights=counts).astype(np.int64))
    if zeros:
        merged = (np.concatenate([[ZERO_INDEX], merged[0]]), np.concatenate([[zeros], merged[1]]))
    return merged


@dataclass
class Group:
    """Everything read for one output row (time bucket x group-by values)."""

    sums: dict[str, Any] = field(default_factory=dict)
    errors_by_type: dict[str, int] = field(default_factory=dict)
    distributions: dict[str, list[Distribution]] = field(default_factory=dict)
    merged: dict[str, Distribution] = field(default_factory=dict)

    def add_sums(self, columns: Sequence[str], values: Sequence[Any]) -> None:
        for column, value in zip(columns, values, strict=True):
            if value is not None:
                self.sums[column] = self.sums.get(column, zero_of(column)) + value

    def add_errors(self, errors: dict[str, Any] | None) -> None:
        for error_type, calls in (errors or {}).items():
            self.errors_by_type[error_type] = self.errors_by_type.get(error_type, 0) + int(calls)

    def add_distribution(self, name: str, indexes: Any, counts: Any) -> None:
        if len(indexes):
            self.distributions.setdefault(name, []).append(
                (np.asarray(indexes, dtype=np.int64), np.asarray(counts, dtype=np.int64))
            )

    @property
    def empty(self) -> bool:
        """Nothing the question counts: every sum read is 0, no error, no sample."""
        return not (any(self.sums.values()) or self.errors_by_type or any(self.distributions.values()))

    def sum(self, column: str) -> Any:
        return self.sums.get(column, zero_of(column))

    def distribution(self, name: str) -> Distribution:
        if name not in self.merged:
            self.merged[name] = merge_distributions(self.distributions.get(name, []))
        return self.merged[name]
