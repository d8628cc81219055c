"""The reward-model stage (Llama 2 §3.2.2): a scalar head on the SFT model, trained on preference
pairs with the margin loss, then evaluated the paper's way (by rating bucket, category, test set).

Trained on Paddock's own loop rather than TRL's RewardTrainer: chosen and rejected go through one
forward pass per batch, packed into one row without padding (`packing`), the loss is the paper's
margin loss straight from the rating, and the loop's resume and artifacts are shared with every
other stage. benchmarks/reward_model.py measures it against RewardTrainer on the same model, data
and batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alignment.data.margins import COLUMN, margin_table
from alignment.errors import PaddockError
from alignment.recipes.config import RecipeError, join, setting
from alignment.recipes.schema import StageConfig
from alignment.stages.common import StageContext, finish_stage, load_records, load_source
from alignment.training.loop import TrainingConfig, train
from reward_models.scoring import supports_packing
from reward_models.training import collate, encode_pairs, quick_accuracy, rm_loss


@dataclass(kw_only=True)
class RewardModelConfig(StageConfig, TrainingConfig):
    """A reward model: scalar head on the SFT model, margin ranking loss (Llama 2 §3.2.2)."""

    margin: str | dict = setting(
        "Rating -> margin: none, small (1, 2/3, 1/3, 0), large (3, 2, 1, 0), column (each pair's own "
        "numeric margin) or a table {rating: value}.",
        default="small",
    )
    learning_rate: float = setting("Peak learning rate (paper: 1e-5; 5e-6 at 70B).", default=1e-5)
    epochs: float = setting("Passes over the pairs (paper: 1; more over-fits).", default=1.0)
    min_warmup_steps: int = setting("Warm up for at least this many steps (paper: 5).", default=5)
    min_lr_ratio: float = setting("Cosine floor as a share of the peak (paper: 10 %).", default=0.1)
    checkpoint_every: int = setting("Save a resumable checkpoint every N steps.", default=50)
    max_length: int = setting("Tokens per sequence; long prompts are cut from the left.", default=512)
    chat_style: Literal["template", "llama2"] = setting(
        "Chat format of prompt + response.", default="template"
    )
    eval_pairs: int = setting("Cap on pairs per test set for evaluation (0: all).", default=0)
    packing: bool = setting(
        "Train on each batch's sequences packed into one row without padding (positions and "
        "attention per sequence; same rewards as padding). Paddock's own reward model only; "
        "others are padded. Evaluation packs whenever the model allows.",
        default=True,
    )

    def check_config(self, path: str) -> None:
        super().check_config(path)
        try:
            margin_table(self.margin)
        except (ValueError, TypeError) as err:
            raise RecipeError(f"{join(path, 'margin')}: {err}", join(path, "margin")) from None


def test_sets(ctx: StageContext, held_out: list) -> dict[str, list]:
    """Each `test_sources` entry is its own test set (the paper's Table 7 columns)."""
    data = ctx.stage.data
    if not data.test_sources:
        return {"held_out": held_out}
    sets = {}
    for source in data.test_sources:
        name, result = load_source(ctx, source, "preferences")
        sets[name] = result.records
    return sets


def check_data(cfg: RewardModelConfig, train_pairs: list, test_pairs: list) -> None:
    """`margin: column` needs each training pair's own margin (test pairs are scored, not trained)."""
    if margin_table(cfg.margin) == COLUMN:
        lacking = [p for p in train_pairs if p.margin is None]
        if lacking:
            raise PaddockError(
                f"stage {cfg.name}: margin 'column' needs a numeric margin on every pair; "
                f"{len(lacking)} of {len(train_pairs)} training pairs have none "
                f"(source {lacking[0].source!r})"
            )


def run_reward_model(ctx: StageContext) -> dict:
    from reward_models.evaluation import evaluate_rm

    cfg: RewardModelConfig = ctx.stage
    tokenizer = ctx.tokenizer()
    train_pairs, held_out, data_report = load_records(ctx, kind="preferences")
    evaluation_sets = {
        name: pairs[: cfg.eval_pairs or None] for name, pairs in test_sets(ctx, held_out).items()
    }
    examples = encode_pairs(train_pairs, tokenizer, cfg.margin, cfg.chat_style, cfg.max_length)
    # The held-out accuracy during training (eval_every); at the end evaluate_rm scores every test
    # pair anyway, so a run without eval_every does not score the first 128 of them twice.
    quick_eval = encode_pairs(
        [p for pairs in evaluation_sets.values() for p in pairs][:128],
        tokenizer,
        cfg.margin,
        cfg.chat_style,
        cfg.max_length,
    )
    model = ctx.trainable_model(head="reward")
    model.config.pad_token_id = tokenizer.pad_token_id
    pad = tokenizer.pad_token_id
    packed = cfg.packing and supports_packing(model)
    final = train(
        model,
        examples,
        lambda batch: collate(batch, pad, packed),
        rm_loss,
        ctx.loop_settings(cfg),
        ctx.dir,
        evaluate=(lambda m: quick_accuracy(m, quick_eval, pad, packed=packed)) if cfg.eval_every else None,
        description=f"{ctx.run_name}/{cfg.name}",
    )
    evaluation = evaluate_rm(
        model,
        tokenizer,
        evaluation_sets,
        ctx.dir.plots,
        style=cfg.chat_style,
        autocast=ctx.autocast_on,
        name=cfg.name,
    )
    # The stage's `plots` are its training curves (finish_stage); the evaluation's keep their own key.
    evaluation_plots = {plot: f"plots/{file}" for plot, file in evaluation.pop("plots").items()}
    summary = {
        "train_pairs": len(examples),
        "data": data_report,
        "margin": cfg.margin,
        "final": final,
        **evaluation,
        "evaluation_plots": evaluation_plots,
    }
    return finish_stage(ctx, model, tokenizer, summary, plot_keys=("loss", "accuracy", "eval_accuracy"))
