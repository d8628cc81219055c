"""llama.cpp as an outside reference for the best-of-K benchmark: the C++ CPU engine, built here.

Not a dependency of Paddock and never run by the tests. `generation.py --llama-cpp` builds its
`llama-batched-bench` tool from the llama.cpp tree vendored in the llama-cpp-python source
distribution on PyPI (the one registry this machine reaches), converts the benchmark's model to a
bf16 GGUF file, and times the same job shape. It answers a question a ratio against transformers
cannot: how fast is a native engine on this machine, with its own fused kernels?

What batched-bench times, and how it is made comparable:
- decoding `rows` sequences of `new_tokens` each in one batch: every row generates every token
  (no EOS), and it picks tokens without sampling, so its decode carries no sampler cost;
- prefill of one prompt shared by all rows (`-pps`); the job has `prompts` distinct prompts, so
  the prefill time counted is `prompts` times the measured one-prompt prefill.
Both favour llama.cpp a little; the figures say so where they are printed.

    python benchmarks/llama_cpp_bench.py            # build (once, ~4 min on 2 cores) and convert only
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from alignment.base_model.default_models import paddock_home

# The llama.cpp commit vendored in this release is what gets built; pin it so figures repeat.
LLAMA_CPP_PYTHON = "0.3.36"
CACHE = paddock_home() / "llama.cpp"


def source_tree() -> Path:
    tree = CACHE / f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp"
    if tree.is_dir():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "--no-deps",
         "--no-binary", ":all:", "-d", str(CACHE)],
        check=True,
    )  # fmt: skip
    sdist = CACHE / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    with tarfile.open(sdist) as archive:
        archive.extractall(CACHE, filter="data")
    sdist.unlink()
    return tree


def build() -> Path:
    """Path of the llama-batched-bench binary, built with the machine's own instruction set."""
    tree = source_tree()
    binary = tree / "build/bin/llama-batched-bench"
    if binary.is_file():
        return binary
    subprocess.run(
        ["cmake", "-B", "build", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
         "-DCMAKE_BUILD_TYPE=Release"],
        cwd=tree, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    jobs = str(os.cpu_count() or 1)
    subprocess.run(
        ["cmake", "--build", "build", "--target", "llama-batched-bench", "-j", jobs],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return binary


def convert(model_dir: Path) -> Path:
    """A bf16 GGUF copy of a Paddock/HF Llama checkpoint (same weights, rounded to bf16 as the
    benchmark's bf16 contenders hold them)."""
    out = CACHE / f"{model_dir.name}-bf16.gguf"
    if out.is_file():
        return out
    tree = source_tree()
    staging = CACHE / f"{model_dir.name}-hf"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging)
    # The converter dispatches on the architecture name and knows transformers' class, not ours.
    config = json.loads((staging / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (staging / "config.json").write_text(json.dumps(config))
    # It imports sentencepiece before looking for a tokenizer.model; SmolLM2 has none (a BPE
    # tokenizer.json), so an empty stand-in lets it fall through to the BPE path it needs.
    stub = CACHE / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "sentencepiece.py").write_text("class SentencePieceProcessor:\n    pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "gguf-py"), str(stub)]))
    subprocess.run(
        [sys.executable, str(tree / "convert_hf_to_gguf.py"), str(staging), "--outtype", "bf16",
         "--outfile", str(out)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    shutil.rmtree(staging)
    return out


def batched_bench(
    binary: Path, gguf: Path, prompt_len: int, rows: int, new_tokens: int, threads: int
) -> dict:
    """One llama-batched-bench run: its JSONL record (t_pp, t_tg in seconds, among others)."""
    context = rows * (prompt_len + new_tokens)  # -no-kvu: each row's stream holds its own copy
    result = subprocess.run(
        [str(binary), "-m", str(gguf), "-c", str(context), "-b", "2048", "-ub", "512",
         "-npp", str(prompt_len), "-ntg", str(new_tokens), "-npl", str(rows), "-pps",
         "-np", str(rows), "-no-kvu", "-t", str(threads), "--output-format", "jsonl"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if not records:
        raise RuntimeError(f"llama-batched-bench printed no result:\n{result.stderr[-2000:]}")
    return records[-1]


def best_of_k_job(binary: Path, gguf: Path, prompts: int, prompt_len: int, samples: int, new_tokens: int,
                  threads: int) -> dict:  # fmt: skip
    """The benchmark's job in llama.cpp's terms: seconds = prompts x one-prompt prefill + the decode."""
    record = batched_bench(binary, gguf, prompt_len, prompts * samples, new_tokens, threads)
    prefill = prompts * record["t_pp"]
    return {
        "tokens": prompts * samples * new_tokens,
        "seconds": prefill + record["t_tg"],
        "prefill_seconds": round(prefill, 3),
        "decode_seconds": round(record["t_tg"], 3),
    }


if __name__ == "__main__":
    from alignment.base_model.default_models import prepare

    print(build())
    print(convert(Path(prepare())))
