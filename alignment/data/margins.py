"""Rating -> margin for the reward-model loss  -log σ(r_c - r_r - m(rating))  (Llama 2, Table 28).

The margin asks the model to separate clearly-better pairs by more; the paper found the large
margins help on distinct pairs and cost a little on similar ones.
"""

from __future__ import annotations

from collections.abc import Mapping

from alignment.data.records import PreferencePair, Rating

PAPER_MARGINS: dict[str, dict[Rating, float]] = {
    "none": {rating: 0.0 for rating in Rating},
    "small": {
        Rating.SIGNIFICANTLY_BETTER: 1.0,
        Rating.BETTER: 2 / 3,
        Rating.SLIGHTLY_BETTER: 1 / 3,
        Rating.NEGLIGIBLY_BETTER: 0.0,
    },
    "large": {
        Rating.SIGNIFICANTLY_BETTER: 3.0,
        Rating.BETTER: 2.0,
        Rating.SLIGHTLY_BETTER: 1.0,
        Rating.NEGLIGIBLY_BETTER: 0.0,
    },
}
COLUMN = "column"  # use each pair's own numeric `margin` field


def margin_table(setting: str | Mapping) -> dict[Rating, float] | str:
    """Resolve a recipe's margin setting: "none" | "small" | "large" | "column" | {rating: value}."""
    if isinstance(setting, Mapping):
        table = {Rating.parse(k): float(v) for k, v in setting.items()}
        missing = [r.value for r in Rating if r not in table]
        if missing:
            raise ValueError(f"custom margin table lacks {', '.join(missing)}")
        return table
    if setting == COLUMN:
        return COLUMN
    if setting not in PAPER_MARGINS:
        raise ValueError(f"unknown margin setting {setting!r}; use none, small, large, column or a table")
    return PAPER_MARGINS[setting]


def pair_margin(pair: PreferencePair, table: dict[Rating, float] | str) -> float:
    """The margin for one pair. A pair without a rating counts as "negligibly better / unsure"."""
    if table == COLUMN:
        if pair.margin is None:
            raise ValueError(f"margin 'column' needs a numeric margin on every pair (source {pair.source!r})")
        return float(pair.margin)
    return table[pair.rating or Rating.NEGLIGIBLY_BETTER]
