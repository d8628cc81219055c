"""The recipe schema: what a recipe file may say, with a help line for every field.

A recipe is a run name, a base model, and an ordered list of stages (SFT, reward models, rejection
sampling, PPO, ...). Each stage module owns its own config dataclass, listed with its runner in the
stage table (alignment/stages/registry.py); a recipe's `stages` entries are parsed by looking up
their `type` there. That keeps this file about the shape shared by all stages.

Everything that can be checked without compute is checked here: types, allowed values, mixtures,
stage names and the `init_from` chain. A recipe that loads is a recipe that can start.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

from alignment.base_model.default_models import DEFAULT_MODELS
from alignment.base_model.families import LORA_TARGETS
from alignment.data.mixtures import KEYS as MIXTURE_KEYS
from alignment.data.mixtures import PAPER_MIXTURES
from alignment.errors import PaddockError
from alignment.placement import DEVICE_PATTERN
from alignment.recipes.config import (
    RecipeError,
    at,
    check_range,
    closest,
    describe,
    join,
    nested_dataclasses,
    setting,
)

# Stage and run names become directories, and overrides address stages by name (`stages.sft.x=1`).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def stage_configs() -> dict[str, type]:
    """Stage type -> its config class, from the one stage table (alignment/stages/registry.py).
    Imported here, not at the top: the stage modules themselves build on this schema."""
    from alignment.stages.registry import STAGE_TYPES

    return {name: stage.config for name, stage in STAGE_TYPES.items()}


def check_name(value: str, pattern: re.Pattern, path: str) -> None:
    if not pattern.fullmatch(value):
        raise RecipeError(
            f"{path}: {value!r} is not a valid name (letters, digits, '_' and '-'; "
            "it becomes a directory name)",
            path,
        )


@dataclass(kw_only=True)
class LoraConfig:
    """Low-rank adapters (PEFT) instead of full fine-tuning; the base weights stay frozen."""

    r: int = setting("Adapter rank.", default=16)
    alpha: int = setting(
        "LoRA scaling numerator (`lora_alpha`); the update is scaled by alpha / r.", default=32
    )
    dropout: float = setting("Dropout on the adapter input.", default=0.05)
    target_modules: list[str] = setting(
        "Linear layers that get adapters (the same names in every supported family).",
        default_factory=lambda: list(LORA_TARGETS),
    )

    def check_config(self, path: str) -> None:
        check_range(self.r, join(path, "r"), low=1)
        check_range(self.alpha, join(path, "alpha"), low=1)
        check_range(self.dropout, join(path, "dropout"), low=0, high=1, high_open=True)
        if not self.target_modules:
            raise RecipeError(f"{join(path, 'target_modules')}: name at least one module", path)


@dataclass(kw_only=True)
class ModelConfig:
    """The base model every stage starts from unless it says otherwise."""

    name_or_path: str = setting(
        "A named default model (`paddock models list`) or a local Hugging Face checkpoint of a supported "
        "family: llama, mistral, qwen2, qwen3 (docs/models.md).",
        default="smollm2-135m",
    )
    precision: Literal["fp32", "bf16-autocast", "bf16"] = setting(
        "`fp32` weights and math; `bf16-autocast`: fp32 weights, bf16 matmuls (fast on CPUs with AMX "
        "and on GPUs); `bf16`: bf16 weights too (half the memory, less exact).",
        default="bf16-autocast",
    )
    device: str = setting(
        "Where every model of the run lives: `auto` (this process's GPU under a launcher, cuda:0 for one "
        "process on a GPU machine, else the CPU), `cpu`, `cuda` or `cuda:N`.",
        default="auto",
    )
    lora: LoraConfig | None = setting(
        "LoRA adapters for trained models; null trains all weights.", default=None
    )
    qlora: bool = setting(
        "Load the frozen base in 4-bit NF4 via bitsandbytes (QLoRA); needs `lora`.", default=False
    )
    trust_remote_code: bool = setting(
        "Let transformers run Python code shipped with the checkpoint. Off unless you trust its source.",
        default=False,
    )
    merge_lora: bool = setting(
        "Also write merged full weights next to each adapter (loads without PEFT); needs `lora`.",
        default=False,
    )

    def check_config(self, path: str) -> None:
        if not DEVICE_PATTERN.fullmatch(self.device):
            where = join(path, "device")
            raise RecipeError(f"{where}: {self.device!r} is not auto, cpu, cuda or cuda:N", where)
        for flag in ("qlora", "merge_lora"):
            if getattr(self, flag) and self.lora is None:
                where = join(path, flag)
                raise RecipeError(f"{where}: needs LoRA; add `lora: {{}}` (defaults) at {at(path)}", where)


@dataclass(kw_only=True)
class VLLMConfig:
    """How the vLLM worker is started: its environment, precision, cache and process layout."""

    python: str | None = setting(
        "Python of the environment vLLM is installed in. Default: $PADDOCK_VLLM_PYTHON, then the "
        "project's .venv-vllm (`make install-vllm`), then this Python if it has vllm.",
        default=None,
    )
    dtype: Literal["bfloat16", "float16", "float32"] = setting(
        "Precision vLLM holds the weights in. bfloat16 answers greedily as Paddock under bf16-autocast.",
        default="bfloat16",
    )
    block_size: int = setting(
        "KV-cache block size in tokens. Prefix caching shares whole blocks, so blocks shorter than the "
        "prompts let a prompt's n samples share its prefill (32: 83% cache hits on the gym's prompts).",
        default=32,
    )
    kv_cache_gb: int = setting("CPU only: GB of memory for the KV cache.", default=1)
    threads: int | None = setting(
        "CPU only: cores vLLM's threads are bound to (0..threads-1). Default: all of them.", default=None
    )
    enforce_eager: bool = setting(
        "Skip torch.compile and CUDA graphs: about 25 s start-up instead of about 100 s on a CPU.",
        default=True,
    )
    max_model_len: int | None = setting(
        "Longest prompt plus answer vLLM accepts. Default: the model's max_position_embeddings, "
        "at most 4096.",
        default=None,
    )
    tensor_parallel_size: int = setting("GPUs one vLLM engine shards the model across.", default=1)
    devices: str | None = setting(
        'GPU only: CUDA devices for the vLLM worker (CUDA_VISIBLE_DEVICES, e.g. "1" or "2,3"). '
        "Default: the policy's own GPU, shared with training (colocated).",
        default=None,
    )
    gpu_memory_utilization: float = setting(
        "GPU only: fraction of the GPU's memory vLLM may take (leave the rest to training when colocated).",
        default=0.3,
    )

    def check_config(self, path: str) -> None:
        for key in ("block_size", "kv_cache_gb", "tensor_parallel_size"):
            check_range(getattr(self, key), join(path, key), low=1)
        if self.threads is not None:
            check_range(self.threads, join(path, "threads"), low=1)
        if self.max_model_len is not None:
            check_range(self.max_model_len, join(path, "max_model_len"), low=2)
        if not 0 < self.gpu_memory_utilization <= 1:
            where = join(path, "gpu_memory_utilization")
            raise RecipeError(f"{where}: {self.gpu_memory_utilization} is out of range (0, 1]", where)


@dataclass(kw_only=True)
class GenerationConfig:
    """The run's rollout engine; a stage's `engine` overrides `engine` for that stage."""

    engine: Literal["auto", "paddock", "vllm"] = setting(
        "Who generates samples (rejection sampling, PPO rollouts, GAtt, context distillation, "
        "evaluation and gold suites): paddock (in process), vllm (worker process), or auto: vllm for "
        "PPO where vLLM is installed, paddock otherwise (docs/generation.md says why).",
        default="auto",
    )
    vllm: VLLMConfig = setting("Settings of the vLLM worker.", default_factory=VLLMConfig)


@dataclass(kw_only=True)
class LoggingConfig:
    """Where metrics go besides each stage's `metrics.jsonl`, and whether progress bars show."""

    report_to: list[Literal["tensorboard", "wandb", "none"]] = setting(
        "Metric sinks in addition to metrics.jsonl: tensorboard, wandb, or [none].",
        default_factory=lambda: ["tensorboard"],
    )
    progress: bool = setting("Show progress bars with rate and ETA.", default=True)

    def check_config(self, path: str) -> None:
        if "none" in self.report_to and len(self.report_to) > 1:
            raise RecipeError(f"{join(path, 'report_to')}: 'none' cannot be combined with other sinks", path)


@dataclass(kw_only=True)
class SourceConfig:
    """One dataset: a local JSONL/JSON/Parquet file or a saved `datasets` directory, read by an adapter."""

    path: str = setting("File or directory to read.")
    adapter: str = setting(
        "Schema of the source: llama2, trl, hh-rlhf, pku-saferlhf, ultrafeedback, shp, ...",
        default="llama2",
    )
    name: str | None = setting(
        "Key of this source in `mixture` and in reports; defaults to the file name without extension.",
        default=None,
        doc_default="default: file name without extension",
    )
    split: str | None = setting("Split to read from a saved `datasets` DatasetDict.", default=None)
    on_error: Literal["raise", "skip"] = setting(
        "Bad rows: `raise` stops with file, line and field; `skip` counts them and sets them aside.",
        default="raise",
    )
    options: dict = setting("Adapter-specific options, passed through to the adapter.", default_factory=dict)
    category: Literal["helpfulness", "safety", "other"] | None = setting(
        "Category for every record of this source; null keeps what the adapter reports.", default=None
    )
    categories: list[Literal["helpfulness", "safety", "other"]] | None = setting(
        "Keep only this source's records of these categories (after `category`), e.g. one prompt file "
        "read twice as a helpfulness and a safety source to mix by ratio; null keeps them all.",
        default=None,
    )
    where: dict | None = setting(
        "Keep only this source's records whose `meta` holds these values, e.g. `{task: borderline}` to "
        "draw the gym's borderline dialogues as a source of their own; null keeps them all.",
        default=None,
    )
    stage: str | None = setting(
        "An earlier stage of this run whose directory `path` is relative to: its output as this source "
        "(a preference_collection stage's pairs_train.jsonl). Checked when that stage has run.",
        default=None,
    )

    def __post_init__(self) -> None:
        if self.name is None:
            self.name = PurePath(self.path.rstrip("/\\") or self.path).stem

    def check_config(self, path: str) -> None:
        if not self.path:
            raise RecipeError(f"{join(path, 'path')}: must not be empty", path)
        # The name becomes a file name in the stage directory (rejects-<name>.jsonl).
        check_name(self.name, RUN_NAME, join(path, "name"))
        if self.categories is not None and not self.categories:
            where = join(path, "categories")
            raise RecipeError(f"{where}: give at least one category, or null for all", where)
        # Build the adapter as the stage will (category included), so an unknown adapter or option
        # fails here rather than when the stage starts, after earlier stages have run.
        from alignment.data.adapters import get_adapter

        options = dict(self.options)
        if self.category:
            options.setdefault("category", self.category)
        where = join(path, "options" if self.options else "adapter")
        try:
            get_adapter(self.adapter, **options)
        except (PaddockError, TypeError) as err:  # TypeError: an option of a type the adapter missed
            raise RecipeError(f"{where}: {err}", where) from None


def check_mixture(spec: dict[str, dict], sources: list[SourceConfig], path: str) -> None:
    """Per-source mixture entries as `alignment.data.mixtures.build_mixture` reads them; every source
    must be named, so nothing listed is dropped silently."""
    names = [s.name for s in sources]
    for name, entry in spec.items():
        where = join(path, name)
        if name not in names:
            raise RecipeError(
                f"{where}: no source named {name!r}{closest(name, names)}; sources: {names}", where
            )
        for key in entry:
            if key not in MIXTURE_KEYS:
                raise RecipeError(f"unknown key {key!r} at {where}{closest(str(key), MIXTURE_KEYS)}", where)
        given = [k for k in ("count", "fraction", "ratio") if k in entry]
        if len(given) != 1:
            raise RecipeError(f"{where}: give exactly one of count, fraction, ratio", where)
        for key in ("anchor", "replace"):
            if key in entry and not isinstance(entry[key], bool):
                raise RecipeError(f"{join(where, key)}: expected bool, got {describe(entry[key])}", where)
        amount = entry[given[0]]
        kind = int if given[0] == "count" else (int, float)
        if isinstance(amount, bool) or not isinstance(amount, kind) or amount < 0:
            expected = "a non-negative int" if given[0] == "count" else "a non-negative number"
            raise RecipeError(f"{join(where, given[0])}: expected {expected}, got {describe(amount)}", where)
        if entry.get("anchor") and "ratio" not in entry:
            raise RecipeError(f"{where}: an anchor source needs a ratio", where)
    missing = [n for n in names if n not in spec]
    if missing:
        raise RecipeError(
            f"{path}: source(s) {', '.join(missing)} not in the mixture (give each a share)", path
        )
    anchors = [name for name, entry in spec.items() if entry.get("anchor")]
    if len(anchors) > 1:
        raise RecipeError(f"{path}: at most one anchor source, got {', '.join(anchors)}", path)
    if any("ratio" in entry for entry in spec.values()) and not anchors:
        raise RecipeError(f"{path}: ratios need one source marked `anchor: true`", path)


def check_unique_names(sources: list[SourceConfig], path: str) -> None:
    seen = set()
    for i, source in enumerate(sources):
        if source.name in seen:
            where = join(join(path, i), "name")
            raise RecipeError(
                f"{where}: duplicate source name {source.name!r}; set `name` to tell them apart", where
            )
        seen.add(source.name)


@dataclass(kw_only=True)
class DataConfig:
    """A stage's data: sources, how to mix them, and the held-out test set."""

    sources: list[SourceConfig] = setting("Training sources (at least one).")
    mixture: dict[str, dict] | str | None = setting(
        "How to mix the sources: per source name one of `count` / `fraction` / `ratio` (plus `anchor`, "
        f"`replace`, `cap`), or a preset ({', '.join(PAPER_MIXTURES)}) over record categories, whose "
        "`rest` is every category it does not name; null concatenates all sources.",
        default=None,
    )
    test_sources: list[SourceConfig] = setting(
        "Held-out test sets; if empty, `test_fraction` of the training data is held out, split by prompt.",
        default_factory=list,
    )
    test_fraction: float = setting(
        "Share of training prompts held out when no `test_sources` are given (no prompt on both sides).",
        default=0.05,
    )
    max_rows: int | None = setting(
        "Cap on training rows after mixing (quick runs); null = all.", default=None
    )
    split_key: str | None = setting(
        "A `meta` field whose value groups rows for the train/test split (e.g. a conversation id). "
        "Default: a dialogue's first user turn, a pair's or RL prompt's whole prompt.",
        default=None,
    )

    def check_config(self, path: str) -> None:
        if not self.sources:
            raise RecipeError(f"{join(path, 'sources')}: give at least one source", path)
        check_unique_names(self.sources, join(path, "sources"))
        check_unique_names(self.test_sources, join(path, "test_sources"))
        where = join(path, "mixture")
        if isinstance(self.mixture, str) and self.mixture not in PAPER_MIXTURES:
            hint = closest(self.mixture, PAPER_MIXTURES)
            raise RecipeError(
                f"{where}: unknown preset {self.mixture!r}{hint}; presets: {', '.join(PAPER_MIXTURES)}", where
            )
        if isinstance(self.mixture, dict):
            check_mixture(self.mixture, self.sources, where)
        check_range(self.test_fraction, join(path, "test_fraction"), low=0, high=1, high_open=True)
        if self.max_rows is not None:
            check_range(self.max_rows, join(path, "max_rows"), low=1)


@dataclass(kw_only=True)
class StageConfig:
    """Fields every stage has. Stage modules subclass this; alignment/stages/registry.py lists them."""

    type: str = setting(
        "Stage type; selects the stage's config and runner.", default="", doc_default="required"
    )
    name: str = setting(
        "Stage name, unique in the recipe: its directory under the run, and what `init_from` refers to. "
        "Defaults to `type`.",
        default="",
        doc_default="default: the stage's `type`",
    )
    init_from: str | None = setting(
        "Model to start from: an earlier stage's name or a checkpoint path. Default: the previous "
        "stage's model (the recipe's `model` for the first stage).",
        default=None,
    )
    data: DataConfig | None = setting("The stage's data.", default=None)
    engine: Literal["auto", "paddock", "vllm"] | None = setting(
        "Rollout engine for this stage's sampling (its gold suite included). Default: the recipe's "
        "`generation.engine`.",
        default=None,
    )

    def __post_init__(self) -> None:
        registered = getattr(self.__class__, "stage_type", None)
        if not self.type and registered:
            self.type = registered
        if not self.name:
            self.name = self.type

    @classmethod
    def config_subclass(cls, data: dict, path: str) -> type:
        stage_configs()  # the stage table sets each config's `stage_type`
        kind = data.get("type", getattr(cls, "stage_type", None))
        where = join(path, "type")
        if kind is None:
            raise RecipeError(
                f"missing required key 'type' at {at(path)} (one of: {registered_types()})", path
            )
        if not isinstance(kind, str):
            raise RecipeError(f"{where}: expected str, got {describe(kind)}", where)
        if cls is not StageConfig:  # parsing a concrete stage config directly
            if kind != cls.stage_type:
                raise RecipeError(f"{where}: {kind!r} given for a {cls.stage_type!r} stage config", where)
            return cls
        configs = stage_configs()
        if kind not in configs:
            hint = closest(kind, configs)
            raise RecipeError(
                f"{where}: unknown stage type {kind!r}{hint}; registered: {registered_types()}", where
            )
        return configs[kind]

    def check_config(self, path: str) -> None:
        check_name(self.name, NAME, join(path, "name"))
        shared = getattr(super(), "check_config", None)  # e.g. TrainingConfig's, mixed in by SFT and RMs
        if shared is not None:
            shared(path)


def registered_types() -> str:
    return ", ".join(sorted(stage_configs())) or "none"


def looks_like_path(value: str) -> bool:
    return any(sep in value for sep in "/\\") or value.startswith((".", "~")) or os.path.exists(value)


@dataclass(kw_only=True)
class Recipe:
    """A whole run: the base model and the ordered stages; artifacts go to `<output_dir>/<run_name>/`."""

    run_name: str = setting("Name of the run; its directory under `output_dir`.")
    output_dir: str = setting("Directory that holds run directories.", default="runs")
    seed: int = setting("Seed for data order, sampling and initialisation.", default=0)
    model: ModelConfig = setting("The base model.", default_factory=ModelConfig)
    stages: list[StageConfig] = setting(
        "The stages, run in order; each is selected by its `type`. Common fields are listed under "
        "StageConfig, per-type fields under each stage type.",
    )
    logging: LoggingConfig = setting("Metric sinks and progress display.", default_factory=LoggingConfig)
    generation: GenerationConfig = setting(
        "The rollout engine and its settings (alignment/engines).", default_factory=GenerationConfig
    )

    def check_config(self, path: str) -> None:
        check_name(self.run_name, RUN_NAME, join(path, "run_name"))
        if not self.stages:
            raise RecipeError(f"{join(path, 'stages')}: give at least one stage", path)
        names: list[str] = []
        for i, stage in enumerate(self.stages):
            here = join(join(path, "stages"), i)
            if stage.name in names:
                where = join(here, "name")
                raise RecipeError(
                    f"{where}: duplicate stage name {stage.name!r}; give each {stage.type!r} stage a `name`",
                    where,
                )
            check_has_data(stage, join(here, "data"))
            rest = [s.name for s in self.stages[i:]]
            check_init_from(stage, names, rest, join(here, "init_from"))
            check_source_stages(stage, names, join(here, "data"))
            check_model_references(stage, names, rest, here)
            names.append(stage.name)


def check_has_data(stage: StageConfig, where: str) -> None:
    """A stage type that reads data (its registered data kind) needs `data` in a recipe."""
    from alignment.stages.registry import STAGE_TYPES

    kind = STAGE_TYPES[stage.type].data_kind if stage.type in STAGE_TYPES else None
    if kind is not None and stage.data is None:
        raise RecipeError(
            f"{where}: a {stage.type} stage needs `data` with {kind.replace('_', ' ')} sources", where
        )


def check_source_stages(stage: StageConfig, earlier: list[str], where: str) -> None:
    """A source read from a stage's output needs that stage to run first, as `init_from` does."""
    if stage.data is None:
        return
    for group in ("sources", "test_sources"):
        for j, source in enumerate(getattr(stage.data, group)):
            if source.stage is not None and source.stage not in earlier:
                here = join(join(join(where, group), j), "stage")
                known = ", ".join(earlier) or "none"
                hint = closest(source.stage, earlier)
                raise RecipeError(f"{here}: {source.stage!r} is not an earlier stage ({known}){hint}", here)


# Settings of some stage types that name a model: an earlier stage or a checkpoint path. A stage
# config that reads only some of them says which in a `model_references` class attribute.
MODEL_REFERENCES = ("reward_models.helpful", "reward_models.safety", "critic_from")


def check_model_references(stage: StageConfig, earlier: list[str], rest: list[str], here: str) -> None:
    """Reward models, a PPO critic and an evaluation's models name earlier stages (or paths), as
    `init_from` does; checked here so a misspelt name fails before the first stage runs."""
    for dotted in getattr(stage, "model_references", MODEL_REFERENCES):
        value = stage
        for part in dotted.split("."):
            value = getattr(value, part, None)
        if isinstance(value, str):
            check_model_reference(value, stage, earlier, rest, join(here, dotted), "use")
    for i, name in enumerate(getattr(stage, "models", None) or []):
        where = join(join(here, "models"), i)
        if name not in earlier:
            known = ", ".join(earlier) or "none"
            hint = closest(name, earlier)
            raise RecipeError(f"{where}: {name!r} is not an earlier stage ({known}){hint}", where)


def check_init_from(stage: StageConfig, earlier: list[str], rest: list[str], where: str) -> None:
    """`init_from` must name an earlier stage, a default model or a path: a later stage's output does
    not exist yet when this one starts, and a bare word that is none of these is a misspelt name."""
    if stage.init_from is not None:
        check_model_reference(stage.init_from, stage, earlier, rest, where, "start from")


def check_model_reference(value: str, stage, earlier: list[str], rest: list[str], where: str, verb: str):
    if value in earlier or value in DEFAULT_MODELS:
        return
    if value == stage.name:
        raise RecipeError(f"{where}: a stage cannot {verb} itself", where)
    if value in rest:
        raise RecipeError(f"{where}: stage {value!r} does not run before {stage.name!r}", where)
    if not looks_like_path(value):
        known = ", ".join(earlier) or "none"
        raise RecipeError(
            f"{where}: {value!r} is neither an earlier stage ({known}) nor a path{closest(value, earlier)}; "
            "write a relative path as ./" + value,
            where,
        )


def schema_classes() -> list[type]:
    """Every dataclass a recipe can contain: the recipe's own, then each registered stage's."""
    configs = stage_configs()
    classes = nested_dataclasses(Recipe)
    for kind in sorted(configs):
        classes += [c for c in nested_dataclasses(configs[kind]) if c not in classes]
    return classes
