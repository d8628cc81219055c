"""Rollout engines: who generates the samples a stage asks for.

- `paddock` (alignment/base_model/generation.py): generation inside the training process, on the
  model object itself; no start-up cost, nothing to install.
- `vllm` (alignment/engines/vllm_client.py): vLLM in a worker process of its own environment
  (`make install-vllm`), loaded with the model's weights and re-synced when they change.
- `auto`: the stage type's own choice (`auto_engine` in alignment/stages/registry.py) where vLLM is
  installed, paddock otherwise. PPO chooses vllm; the stages that sample once choose paddock,
  whose missing start-up outweighs vLLM's decode speed there on the CPU (figures in
  benchmarks/RESULTS.md, "Rollout engines").

A stage asks `StageContext.sampler(model)` for what to pass to `alignment.answers.answer`: the model
itself, or a vLLM engine holding the model's current weights. Both return the same
`GenerationOutput`. The settings (`generation:` in a recipe) are declared in recipes/schema.py.
"""

from __future__ import annotations


def resolve_engine(name: str, vllm, auto_choice: str = "paddock") -> str:
    """`auto` -> `auto_choice` (the stage type's), or paddock where it is vllm and no Python with
    vllm is found; `vllm` without one is an error."""
    from alignment.engines.vllm_client import find_python, require_python

    if name == "vllm":
        require_python(vllm.python)
    elif name == "auto":
        return "vllm" if auto_choice == "vllm" and find_python(vllm.python) else "paddock"
    return name
