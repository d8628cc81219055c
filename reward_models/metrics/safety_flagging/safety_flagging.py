"""Safety flagging: precision and recall of calling a response unsafe when σ(safety score) < threshold,
the rule Llama 2's PPO uses with threshold 0.15 (paper: precision 0.89, recall 0.55 on Meta Safety).

Inputs: `scores` (raw safety-RM rewards) and `unsafe` (bool labels); `threshold` is a compute
argument (default 0.15). Same numbers as `reward_models.thresholds.flag_stats`.
"""

import datasets
import evaluate

from reward_models.thresholds import PAPER_THRESHOLD, flag_stats

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    scores (list of float): safety-RM reward of each response (a logit; σ(score) is compared).
    unsafe (list of bool): True for an unsafe response (the positive class).
    threshold (float, optional): flag when σ(score) < threshold; default 0.15.
Returns:
    precision (float or None when nothing is flagged), recall (float or None when nothing is unsafe),
    threshold, flagged, true_positives, unsafe, responses.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SafetyFlagging(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models (§3.2.2)",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"scores": datasets.Value("float64"), "unsafe": datasets.Value("bool")}
            ),
        )

    def _compute(self, scores, unsafe, threshold=PAPER_THRESHOLD):
        return flag_stats(scores, unsafe, threshold)
