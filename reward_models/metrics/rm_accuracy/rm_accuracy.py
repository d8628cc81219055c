"""Reward-model accuracy: the fraction of pairs where r(chosen) > r(rejected) (ties count as wrong),
overall and per Llama 2 rating bucket, each with its pair count and 95 % Wilson interval.

Inputs: `chosen_rewards`, `rejected_rewards` (floats) and optional `ratings` (significantly_better,
better, slightly_better, negligibly_better; None or "" for unrated). Same numbers as
`reward_models.evaluation.cell` / `by_rating`.
"""

import datasets
import evaluate
import numpy as np

from reward_models.evaluation import by_rating, cell

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    chosen_rewards (list of float): reward of each pair's chosen response.
    rejected_rewards (list of float): reward of each pair's rejected response.
    ratings (list of str or None, optional): each pair's rating bucket.
Returns:
    accuracy (float or None), n (int), ci95 ([lo, hi]), accuracy_by_rating ({bucket: {accuracy, n, ci95}}).
Examples:
    >>> metric = evaluate.load("reward_models/metrics/rm_accuracy")
    >>> metric.compute(chosen_rewards=[1.0, 0.0], rejected_rewards=[0.0, 1.0])["accuracy"]
    0.5
"""


class _Rated:
    def __init__(self, rating):
        self.rating = rating


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RmAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models (Table 8)",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "chosen_rewards": datasets.Value("float64"),
                    "rejected_rewards": datasets.Value("float64"),
                    "ratings": datasets.Value("string"),
                }
            ),
        )

    @staticmethod
    def _fill(kwargs):
        if kwargs.get("ratings") is None and kwargs.get("chosen_rewards") is not None:
            kwargs["ratings"] = [""] * len(kwargs["chosen_rewards"])  # all-None columns have no arrow type
        elif kwargs.get("ratings") is not None:
            kwargs["ratings"] = [r or "" for r in kwargs["ratings"]]
        return kwargs

    def add_batch(self, **kwargs):
        """Add a batch of pairs; `ratings` may be left out."""
        return super().add_batch(**self._fill(kwargs))

    def compute(self, **kwargs):
        """Accuracy over everything added so far plus the pairs given here; `ratings` may be left out."""
        return super().compute(**self._fill(kwargs))

    def _compute(self, chosen_rewards, rejected_rewards, ratings):
        correct = np.asarray(chosen_rewards, dtype=np.float64) > np.asarray(
            rejected_rewards, dtype=np.float64
        )
        return {
            **cell(correct),
            "accuracy_by_rating": by_rating([_Rated(r or None) for r in ratings], correct),
        }
