"""Stops on NaN or inf: which tensor, at which step, for which examples (or prompts).

The checks raise before the optimizer steps and before any checkpoint is written, so the last
checkpoint on disk is the last good one and a re-run (after fixing the cause) resumes from it.
Code that does not know its step (the PPO trainer) raises without one; `at_step` adds the step
and batch ids on the way out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from alignment.errors import PaddockError


class NonFiniteError(PaddockError):
    def __init__(self, what: str, rows: list[int], step: int | None = None, batch: Sequence | None = None):
        self.what, self.rows, self.step, self.batch = what, rows, step, batch
        where = f" at step {step}" if step is not None else ""
        ids = f" (batch ids {list(batch)[:8]}{' ...' if len(batch) > 8 else ''})" if batch is not None else ""
        rows_text = f" in rows {rows[:8]}" if rows else ""
        super().__init__(
            f"{what} is not finite (NaN or inf){rows_text}{where}{ids}; the last good checkpoint is kept"
        )


def bad_rows(value: torch.Tensor) -> list[int]:
    """Indices along the first dimension holding a NaN or inf ([] for a scalar)."""
    if value.ndim == 0:
        return []
    bad = ~torch.isfinite(value.detach().reshape(value.shape[0], -1)).all(dim=1)
    return bad.nonzero().flatten().tolist()


def check_finite(value: torch.Tensor, what: str, step: int | None = None, batch: Sequence | None = None):
    if not bool(torch.isfinite(value.detach()).all()):
        raise NonFiniteError(what, bad_rows(value), step, batch)


@contextmanager
def at_step(step: int, batch: Sequence | Callable[[], Sequence]) -> Iterator[None]:
    """Re-raise a NonFiniteError from inside with `step` and `batch` filled in; `batch` may be a
    function, called only on the error path (finding the ids can cost a search)."""
    try:
        yield
    except NonFiniteError as err:
        if err.step is not None:
            raise
        raise NonFiniteError(err.what, err.rows, step, batch() if callable(batch) else batch) from None
