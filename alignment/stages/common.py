"""What every stage runner shares: its context (recipe, directories, model to start from), data
loading with mixtures and prompt-disjoint splits, the gold suite before and after, and the finishing
steps."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignment import distributed
from alignment.answers import prompts_generated
from alignment.data.sources import data_path
from alignment.engines import resolve_engine
from alignment.placement import peak_memory_gb, placement_record, resolve_device
from alignment.plotting import figure, save_plot
from alignment.precision import bf16_autocast
from alignment.runs import StageDir, write_json
from alignment.stages import stage_data
from alignment.training.loop import LoopSettings
from safety.evaluation import evaluate_gold, suite_rows
from safety.rewards import LazyScorer, RewardScorer, load_scorer


@dataclass
class StageContext:
    recipe: object
    stage: object
    run_dir: Path
    dir: StageDir
    init: str  # model name, checkpoint or saved adapter to start from
    vllm: object = field(default=None, repr=False)  # the stage's VLLMEngine, started on first use

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def run_name(self) -> str:
        return self.recipe.run_name

    def tokenizer(self):
        from alignment.base_model import load_tokenizer
        from alignment.model_setup import resolve_init

        # An adapter directory has no config.json; its base (or merged weights) has the tokenizer.
        return load_tokenizer(
            resolve_init(self.init)[0], trust_remote_code=self.recipe.model.trust_remote_code
        )

    def trainable_model(self, head: str = "causal_lm"):
        from alignment.model_setup import build_trainable

        return build_trainable(self.recipe.model, self.init, head=head)

    @property
    def autocast_on(self) -> bool:
        """Whether matmuls run in bf16 under autocast (`model.precision: bf16-autocast`)."""
        return self.recipe.model.precision == "bf16-autocast"

    def loop_settings(self, cfg) -> LoopSettings:
        """The fine-tuning loop's settings: `cfg`'s TrainingConfig fields and the run's precision,
        seed and progress display."""
        return LoopSettings.from_config(
            cfg, autocast=self.autocast_on, seed=self.seed, progress=self.recipe.logging.progress
        )

    def autocast(self, model):
        return bf16_autocast(model, self.autocast_on)

    @property
    def device(self) -> torch.device:
        """Where this stage's models and batches go (`model.device`, alignment/placement.py)."""
        return resolve_device(self.recipe.model.device)

    @property
    def engine_name(self) -> str:
        """This stage's rollout engine, `auto` resolved (alignment/engines)."""
        return stage_engine(self.recipe, self.stage)

    def sampler(self, model):
        """What to pass to `answers.answer` (or PPO) to sample from `model`: the model itself under
        the paddock engine; under vllm the stage's engine, started on first use and synced to the
        model's current weights (LoRA merged) on each call."""
        if self.engine_name != "vllm":
            return model
        if self.vllm is None:
            from alignment.engines.vllm_client import VLLMEngine

            settings = self.recipe.generation.vllm
            log = (
                self.dir.root
                / f"vllm_worker{'' if distributed.world_size() == 1 else distributed.rank()}.log"
            )
            self.vllm = VLLMEngine(
                model, self.tokenizer(), settings, self.device, seed=self.seed, log_path=log
            )
        else:
            # Why `sync` fingerprints the weights (sum and sum of squares of every trainable
            # tensor, vllm_client.weights_fingerprint) on every call: vLLM samples from its own
            # copy, which must never be stale, and nothing cheaper says whether `model` changed since
            # the last sync. Tensor version counters would, but fused AdamW writes parameters
            # without bumping them; an optimizer-step count is not known here and would miss weights
            # written another way (a checkpoint loaded on resume). The paddock engine never gets
            # here (it samples from `model` itself), and a call comes once per generation phase
            # (a gold suite, a GAtt turn, one temperature of rejection sampling), so one pass over
            # the weights sits before a generation that costs far more, and it spares the write and
            # reload of the weights whenever they did not change (GAtt's turns, a temperature sweep).
            self.vllm.sync(model)
        return self.vllm

    def close(self) -> None:
        """Stop the stage's vLLM worker, if it started one."""
        if self.vllm is not None:
            self.vllm.close()

    def engine_record(self) -> dict:
        record = {"engine": self.engine_name}
        if self.vllm is not None:
            record.update(
                vllm=self.vllm.vllm_version,
                startup_seconds_this_run=round(self.vllm.startup_seconds, 1),
                weight_syncs_this_run=self.vllm.syncs,
            )
        return record

    def write_summary(self, summary: dict) -> dict:
        """summary.json with what the stage ran on: device, processes, their backend, the kernel
        backend, and per process (rank order) how many prompts it generated in this run (a resumed
        stage counts only what was left) and its peak memory; and the rollout engine. Every process
        calls it."""
        record = placement_record(self.device)
        record["prompts_generated_this_run"] = distributed.all_gather_objects(prompts_generated())
        record["peak_memory_gb_this_run"] = distributed.all_gather_objects(peak_memory_gb(self.device))
        summary = {**summary, "placement": record, "generation": self.engine_record()}
        self.dir.write_summary(summary)
        return summary

    def reward_scorer(
        self, cfg, tokenizer, style: str, lazy: bool = True, split: bool = False
    ) -> LazyScorer | RewardScorer:
        """Both reward models `cfg` names (earlier stages or paths) and their combination; `lazy`:
        loaded on first use, so a stage resumed past its scoring never loads them; `split`: every
        process scores the same list, each a share of its batches (safety/rewards.py). A stage
        records `scorer.health` in its summary as `rm_health`."""
        paths = {role: resolve_stage_model(self, getattr(cfg, role)) for role in ("helpful", "safety")}
        what = f"stage {self.stage.name}"

        def load() -> RewardScorer:
            model = self.recipe.model
            return load_scorer(model, cfg, paths, tokenizer, style, self.autocast_on, what, split)

        return LazyScorer(load) if lazy else load()


def stage_engine(recipe, stage) -> str:
    """The engine `stage` samples with: its own `engine` or the recipe's, `auto` resolved by the
    stage type's choice; `vllm` where vLLM is missing is a PaddockError."""
    from alignment.stages.registry import STAGE_TYPES

    generation = recipe.generation
    return resolve_engine(
        stage.engine or generation.engine, generation.vllm, STAGE_TYPES[stage.type].auto_engine
    )


def resolve_stage_model(ctx: StageContext, name_or_path: str) -> str:
    """An earlier stage's model directory, or a path (relative ones as `data_path` finds them)."""
    names = [s.name for s in ctx.recipe.stages]
    if name_or_path in names:
        return str(ctx.run_dir / name_or_path / "model")
    return str(data_path(name_or_path))


def load_source(ctx: StageContext, source, kind: str):
    """(name, LoadResult) of one of the stage's sources; skipped rows go to the stage directory."""
    return stage_data.load_source(source, kind, ctx.run_dir, ctx.dir.root)


def load_records(ctx: StageContext, kind: str) -> tuple[list, list, dict]:
    """(train, test, report) for the stage's data: sources loaded, mixed, capped and split by prompt."""
    return stage_data.stage_records(ctx.stage, ctx.seed, ctx.run_dir, kind, ctx.dir.root)


def plot_metrics(ctx: StageContext, keys=("loss", "eval_loss")) -> list[str]:
    """A PNG per metric family (training loss with held-out loss on the same axes)."""
    rows = ctx.dir.metrics.rows()
    if not rows:
        return []
    fig, ax = figure(figsize=(6, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=key)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(" / ".join(keys))
    ax.set_title(f"{ctx.run_name} / {ctx.stage.name}")
    ax.legend()
    ax.grid(alpha=0.3)
    return [save_plot(fig, ctx.dir.plots / "loss.png", root=ctx.dir.root)]


def finish_stage(ctx: StageContext, model, tokenizer, summary: dict, plot_keys=("loss", "eval_loss")) -> dict:
    """Save the model, plots and summary, then the completion marker, in that order."""
    from alignment.model_setup import resolve_init, save_trained

    base_path, _ = resolve_init(ctx.init)
    if distributed.is_main():  # the others' copies are identical; no need to fill their mirrors
        save_trained(model, tokenizer, ctx.dir.model, base_path, ctx.recipe.model.merge_lora)
    summary = {
        "stage": ctx.stage.name,
        "type": ctx.stage.type,
        "init": str(ctx.init),
        **summary,
        "plots": plot_metrics(ctx, plot_keys),
    }
    summary = ctx.write_summary(summary)
    ctx.dir.mark_complete()
    # Resume checkpoints (weights + optimizer, ~3x the model) are scratch once the stage is done.
    shutil.rmtree(ctx.dir.checkpoints, ignore_errors=True)
    return summary


def cached_gold_suite(ctx: StageContext, model, tokenizer, when: str) -> dict | None:
    """The stage's `gold` suite (safety/evaluation.py) answered by `model`, or None without one;
    cached in the stage dir as gold_<when>.json, so a resumed stage reports the same "before" as an
    uninterrupted one."""
    cfg = ctx.stage.gold
    if cfg is None:
        return None
    cache = ctx.dir.root / f"gold_{when}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    rows = suite_rows(cfg, data_path)
    rates, texts = evaluate_gold(
        ctx.sampler(model),
        tokenizer,
        rows,
        cfg.max_new_tokens,
        ctx.stage.chat_style,
        ctx.autocast_on,
        progress=ctx.recipe.logging.progress,
        split=True,
    )
    result = {**rates, "examples": {kind: texts[kind][:3] for kind in texts}}
    write_json(cache, result)
    return result
