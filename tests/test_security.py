"""Security of the tool itself (docs/design.md, Reliability).

Loading a pickle can run arbitrary code, and so can a checkpoint's own Python when
`trust_remote_code` is on; a downloaded preference dump or checkpoint is untrusted input. So:

- a static check walks every .py file of the repository (benchmarks and tests included) and fails on
  `torch.load` without `weights_only=True`, `pickle.load(s)`, a literal `trust_remote_code=True`
  and `use_safetensors=False`;
- `trust_remote_code` is False unless a recipe sets it, and the recipe's value is what reaches the
  model and tokenizer loaders;
- model weights and LoRA adapters are read from safetensors only.

No network at run time is covered by the pipeline smoke run in tests/test_rl_stages.py (default
tier): every stage through the real CLI with HF_HUB_OFFLINE=1 and the socket guard of
tests/network_guard. Recipes cannot name a hub source (`allow_hub` is never set by a stage), so
there is no run-time case where the network is allowed.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", "venv", ".git", "build", "dist", "node_modules", "__pycache__", "runs"}


def python_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if any(p in SKIP_DIRS or p.startswith(".") or p.endswith(".egg-info") for p in parts[:-1]):
            continue
        files.append(path)
    return sorted(files)


def dotted(node: ast.AST) -> str:
    """`torch.load` for `torch.load`, `load` for a bare name, "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def violations(source: str, name: str = "<source>") -> list[str]:
    """Every unsafe loading pattern in `source`, as `name:line: what`."""
    tree = ast.parse(source)
    # names bound by `from torch import load [as x]` / `from pickle import loads`
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "dill", "cloudpickle"):
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = dotted(node.func)
        func = aliases.get(func, func)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        where = f"{name}:{node.lineno}"
        if func == "torch.load" and not is_const(keywords.get("weights_only"), True):
            found.append(f"{where}: torch.load without weights_only=True")
        if func.split(".")[0] in ("pickle", "dill", "cloudpickle") and func.split(".")[-1] in (
            "load",
            "loads",
            "Unpickler",
        ):
            found.append(f"{where}: {func} (unpickling runs code)")
        if is_const(keywords.get("trust_remote_code"), True):
            found.append(f"{where}: trust_remote_code=True (only a recipe may turn it on)")
        if is_const(keywords.get("use_safetensors"), False):
            found.append(f"{where}: use_safetensors=False (weights are read from safetensors only)")
        if is_const(keywords.get("allow_pickle"), True):
            found.append(f"{where}: allow_pickle=True")
    return found


def test_the_repository_has_no_unsafe_loading():
    files = python_files()
    # the walk must see the code it guards, or it passes vacuously
    seen = {str(p.relative_to(REPO)) for p in files}
    assert {"alignment/cli.py", "alignment/training/checkpoint.py", "tests/test_security.py"} <= seen
    assert any(s.startswith("benchmarks/") for s in seen)
    problems = [
        v for path in files for v in violations(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("import torch\ntorch.load('a.pt')", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('a.pt', weights_only=False)", "torch.load without weights_only=True"),
        ("import torch\nflag = True\ntorch.load('a.pt', weights_only=flag)", "torch.load without"),
        ("from torch import load as L\nL('a.pt')", "torch.load without weights_only=True"),
        ("import pickle\npickle.loads(b'')", "pickle.loads"),
        ("from pickle import load\nload(f)", "pickle.load"),
        ("import pickle\npickle.Unpickler(f).load()", "pickle.Unpickler"),
        ("AutoModel.from_pretrained(p, trust_remote_code=True)", "trust_remote_code=True"),
        ("M.from_pretrained(p, use_safetensors=False)", "use_safetensors=False"),
        ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "allow_pickle=True"),
    ],
)
def test_the_checker_finds_each_unsafe_pattern(snippet, expected):
    found = violations(snippet)
    assert len(found) == 1 and expected in found[0], found


def test_the_checker_accepts_the_safe_forms():
    safe = textwrap.dedent(
        """
        import torch
        torch.load("a.pt", weights_only=True)
        M.from_pretrained(p, trust_remote_code=cfg.trust_remote_code, use_safetensors=True)
        M.from_pretrained(p, trust_remote_code=False)
        json.loads(text)
        """
    )
    assert violations(safe) == []


# --- trust_remote_code: off by default, the recipe's value reaches the loaders ---------------------


def test_trust_remote_code_defaults_to_false_in_the_schema_and_in_every_shipped_recipe():
    from alignment.recipes import find_recipes, load_recipe
    from alignment.recipes.schema import ModelConfig

    assert ModelConfig().trust_remote_code is False
    for path in find_recipes():
        assert load_recipe(path).model.trust_remote_code is False, path


@pytest.fixture
def spied_loaders(monkeypatch, tmp_path):
    """model_setup's loaders with the model loader replaced by a recorder: what would be loaded,
    with which trust_remote_code, without loading anything."""
    import alignment.model_setup as setup

    calls = []

    class Loaded:
        def requires_grad_(self, flag):
            return self

        def eval(self):
            return self

    def fake_load_model(path, **kwargs):
        calls.append(kwargs)
        return Loaded()

    monkeypatch.setattr(setup, "load_model", fake_load_model)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    return setup, calls, str(checkpoint)


@pytest.mark.parametrize("trusted", [False, True])
def test_the_recipe_value_of_trust_remote_code_reaches_the_model_loaders(spied_loaders, trusted):
    from alignment.recipes.schema import ModelConfig

    setup, calls, checkpoint = spied_loaders
    cfg = ModelConfig(name_or_path=checkpoint, trust_remote_code=trusted)
    setup.build_trainable(cfg, checkpoint)
    setup.load_frozen(cfg, checkpoint, head="reward")
    assert [c["trust_remote_code"] for c in calls] == [trusted, trusted]


@pytest.mark.parametrize("trusted", [False, True])
def test_trust_remote_code_reaches_transformers(monkeypatch, tmp_path, trusted):
    """The last hop: Paddock's loaders hand the flag (and use_safetensors=True) to transformers."""
    import transformers

    from alignment.base_model import checkpoint as ckpt
    from alignment.base_model import loading

    seen = {}

    def record(name):
        def fake(*args, **kwargs):
            seen[name] = kwargs
            raise RuntimeError("stop after recording")

        return fake

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    monkeypatch.setattr(ckpt, "read_config", lambda path: {"quantization_config": {}})  # skip shape checks
    monkeypatch.setattr(ckpt.HEADS["causal_lm"], "from_pretrained", record("model"))
    with pytest.raises(RuntimeError, match="stop after recording"):
        loading.load_tokenizer(tmp_path, trust_remote_code=trusted)
    with pytest.raises(RuntimeError, match="stop after recording"):
        loading.load_model(tmp_path, trust_remote_code=trusted)
    assert seen["tokenizer"]["trust_remote_code"] is trusted
    assert seen["model"]["trust_remote_code"] is trusted
    assert seen["model"]["use_safetensors"] is True


# --- safetensors only ----------------------------------------------------------------------------


def test_a_lora_adapter_with_only_pickled_weights_is_refused(spied_loaders):
    """peft falls back to adapter_model.bin (and to the hub when a local dir has no weights);
    Paddock refuses both before peft is asked."""
    from alignment.errors import PaddockError

    setup, _, checkpoint = spied_loaders
    adapter = Path(checkpoint).parent / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(PaddockError, match="adapter_model.safetensors"):
        setup.apply_adapter(object(), adapter)
