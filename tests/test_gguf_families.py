"""GGUF import (`convert_gguf`) for each model family, on tiny random models written as GGUF here.

Each test builds a 2-layer transformers model of one family, writes it as an F32 GGUF laid out the
way llama.cpp's converter lays one out (its metadata keys, tensor names and q/k row order), imports
the file with `convert_gguf`, and compares Paddock's model loaded from the result with the source
model. F32 means no quantisation error, so any difference beyond float noise is an import bug.

Llama 3's rope scaling, which llama.cpp stores as a `rope_freqs.weight` tensor that transformers
drops, is rebuilt by convert_gguf; the rebuilding itself is tested on the real Llama 3.x parameters.
What transformers cannot read back is pinned by a strict xfail: Mistral as a family (its GGUFs come
back as Llama).
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from alignment import load_model
from alignment.base_model import gguf_import
from alignment.base_model.default_models import DEFAULT_MODELS, gguf_source
from alignment.base_model.gguf_import import ROPE_FREQS_TOL, _rope_from_freq_divisors, convert_gguf
from alignment.base_model.modeling import llama3_scaled
from alignment.errors import PaddockError
from tests.conftest import family_config as tiny_family_config

# The files carry a cut of SmolLM2's tokenizer: its first 512 tokens and the merges that make them
# (merge k makes token FIRST_MERGED + k), a complete byte-level BPE. With the whole vocabulary
# (49152 tokens) transformers' GGUF reader takes ~10 s a file just to parse the metadata.
VOCAB = 512
FIRST_MERGED = 252
MAX_ABS_DIFF = 1e-4


def rope(theta: float) -> dict:
    return {"rope_type": "default", "rope_theta": theta}


# What sets each family apart from Llama. Each rope base differs from its config class's default,
# so a base the import dropped would change the logits (by ~0.3 or more).
FAMILY_SETTINGS = {
    "llama": dict(rope_parameters=rope(100000.0)),
    # every layer slides, over a window shorter than the test sequences
    "mistral": dict(sliding_window=8, rope_parameters=rope(20000.0)),
    # q/k/v biases come with the family
    "qwen2": dict(tie_word_embeddings=True, rope_parameters=rope(30000.0)),
    # q/k norms, and a head width that is not hidden_size / heads (16)
    "qwen3": dict(tie_word_embeddings=True, head_dim=24, rope_parameters=rope(40000.0)),
}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def family_config(model_type: str, **overrides):
    """conftest's tiny model in `model_type`'s config class, with the SmolLM2 cut's vocabulary."""
    return tiny_family_config(model_type, vocab_size=VOCAB, **{**FAMILY_SETTINGS[model_type], **overrides})


def tiny_model(config):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer_fields():
    return smollm2_tokenizer_fields()


def smollm2_tokenizer_fields() -> dict:
    """SmolLM2's `tokenizer.*` metadata (vocabulary, merges, special ids, chat template) cut to
    VOCAB tokens, as {key: (value, GGUF type, element type of an array or None)}. convert_gguf builds
    the tokenizer it saves from these, so every file needs a real set."""
    reader = gguf.GGUFReader(gguf_source(DEFAULT_MODELS["smollm2-135m"]))
    cut = {
        "tokenizer.ggml.tokens": slice(VOCAB),
        "tokenizer.ggml.token_type": slice(VOCAB),
        "tokenizer.ggml.merges": slice(VOCAB - FIRST_MERGED),
    }
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            value = field.contents(cut.get(key, slice(None)))
            sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            fields[key] = (value, field.types[0], sub_type)
    # the last merge kept makes the last token kept: the cut is a consistent vocabulary
    assert fields["tokenizer.ggml.merges"][0][-1].replace(" ", "") == fields["tokenizer.ggml.tokens"][0][-1]
    return fields


def llama_cpp_row_order(weight: np.ndarray, heads: int) -> np.ndarray:
    """A q or k projection's rows in the order llama.cpp's `llama` architecture wants them.

    transformers rotates dimension i of a head together with dimension i + head_dim/2; llama.cpp's
    `llama` rope rotates neighbours (2i, 2i+1). Its converter therefore interleaves the two halves of
    each head's rows, and transformers' GGUF reader (LlamaTensorProcessor) undoes that for `llama`
    files only. llama.cpp's Qwen2 and Qwen3 rotate halves like transformers: no reordering there.
    """
    rows, cols = weight.shape
    halves = weight.reshape(heads, 2, rows // heads // 2, cols)  # [head, half, i, in]
    return halves.swapaxes(1, 2).reshape(rows, cols)  # [head, i, half, in]: rows i, i + d/2 adjacent


def write_gguf(path, model, arch: str, tokenizer_fields: dict, name: str, extra_tensors=None) -> None:
    """Write `model` as an F32 GGUF of llama.cpp architecture `arch` ("llama", "qwen2" or "qwen3").

    Metadata: the `{arch}.*` keys llama.cpp writes (transformers reads them back through
    GGUF_CONFIG_MAPPING in integrations/ggml.py; it skips key_length for qwen3, which convert_gguf
    passes on itself), then the tokenizer fields. Tensors: HF names translated through gguf-py's
    own table, the one llama.cpp's converter and transformers' reader both use; F32 values
    unchanged but for the Llama q/k row order. A tied head is the embedding, and llama.cpp writes
    no `output.weight` for it (that absence is what tells transformers the head is tied).
    """
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch)  # writes general.architecture
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)  # rotary width: all of each head rotates
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    for key, (value, value_type, sub_type) in tokenizer_fields.items():
        writer.add_key_value(key, value, value_type, sub_type)

    arch_id = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch)
    names = gguf.get_tensor_name_map(arch_id, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, f"gguf-py has no {arch} name for {hf_name}"
        data = tensor.detach().float().numpy()
        if arch == "llama" and gguf_name.endswith("attn_q.weight"):
            data = llama_cpp_row_order(data, config.num_attention_heads)
        elif arch == "llama" and gguf_name.endswith("attn_k.weight"):
            data = llama_cpp_row_order(data, config.num_key_value_heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(data))
    for gguf_name, data in (extra_tensors or {}).items():
        writer.add_tensor(gguf_name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def token_batch(length: int) -> torch.Tensor:
    """Three random sequences that avoid the special tokens (ids 0-16)."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(17, VOCAB, (3, length), generator=generator)


def max_logit_diff(source, checkpoint, length: int) -> float:
    ids = token_batch(length)
    with torch.no_grad():
        return (load_model(checkpoint).eval()(ids).logits - source(ids).logits).abs().max().item()


MISTRAL_AS_FAMILY = (
    "transformers makes a Mistral config from a GGUF only for architecture `llama` with general.name "
    "exactly 'mistral', then cannot map its tensors: gguf-py has no `mistral` architecture "
    "(NotImplementedError 'Unknown gguf model_type: mistral in gguf-py'); the window is not read either"
)


@pytest.mark.parametrize(
    "model_type, arch, architecture",
    [
        ("llama", "llama", "LlamaForCausalLM"),
        pytest.param(
            "mistral",
            "llama",  # what llama.cpp writes for Mistral
            "MistralForCausalLM",
            marks=pytest.mark.xfail(strict=True, raises=NotImplementedError, reason=MISTRAL_AS_FAMILY),
        ),
        ("qwen2", "qwen2", "Qwen2ForCausalLM"),
        ("qwen3", "qwen3", "Qwen3ForCausalLM"),
    ],
)
def test_gguf_import_keeps_family_and_logits(tmp_path, tokenizer_fields, model_type, arch, architecture):
    """An F32 GGUF of a tiny random model imports as a checkpoint of the same family (config.json's
    model_type and architectures), and Paddock's model loaded from it gives the source's logits on
    12-token sequences within 1e-4. That needs every tensor found under its GGUF name in the right
    row order, and the config rebuilt from the metadata as built: rope base, tied or untied head,
    Qwen2's biases, Qwen3's q/k norms and its 24-wide heads (hidden 64 / 4 heads would be 16)."""
    source = tiny_model(family_config(model_type))
    # general.name is the family: the only way transformers tells a Mistral GGUF from a Llama one
    write_gguf(tmp_path / "tiny.gguf", source, arch, tokenizer_fields, name=model_type)

    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == model_type
    assert config["architectures"] == [architecture]
    assert max_logit_diff(source, out, length=12) <= MAX_ABS_DIFF


def test_mistral_gguf_imports_as_llama_without_window(tmp_path, tokenizer_fields):
    """A Mistral GGUF as llama.cpp writes one (architecture `llama`, Llama q/k row order, a model
    name such as "Mistral 7B", no window in the metadata) imports as a Llama checkpoint: model_type
    llama, LlamaForCausalLM, no sliding_window. Within the window (8 tokens here) attention is the
    same, so the logits equal the Mistral source's within 1e-4: the import is exact for Mistral v0.2
    and later (no window), and for v0.1 (window 4096) on sequences up to 4096 tokens."""
    source = tiny_model(family_config("mistral"))
    write_gguf(tmp_path / "tiny.gguf", source, "llama", tokenizer_fields, name="Tiny Mistral")

    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config.get("sliding_window") is None
    assert max_logit_diff(source, out, length=source.config.sliding_window) <= MAX_ABS_DIFF


def unscaled_frequencies(theta: float, head_dim: int) -> torch.Tensor:
    """Default rope frequencies [head_dim / 2], float32, as transformers, Paddock and llama.cpp's
    converter compute them."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


def stored_divisors(inv_freq: torch.Tensor, rope: dict) -> torch.Tensor:
    """What llama.cpp stores as `rope_freqs.weight` for llama3 scaling `rope`: per pair, the default
    frequency over the scaled one, in float32 (returned as float64, as convert_gguf reads it)."""
    return (inv_freq / llama3_scaled(inv_freq, rope)).float().double()


def ramp_pairs(divisors: torch.Tensor, factor: float) -> int:
    return int(((divisors > 1) & (divisors < factor)).sum())


def frequency_error(rope: dict, inv_freq: torch.Tensor, divisors: torch.Tensor) -> float:
    """How far `rope`'s frequencies are from inv_freq / divisors, as a fraction of inv_freq."""
    got = llama3_scaled(inv_freq, rope) if rope["rope_type"] == "llama3" else inv_freq / rope["factor"]
    return ((got.double() - inv_freq.double() / divisors).abs() / inv_freq.double()).max().item()


@pytest.mark.parametrize(
    "model, head_dim, factor, ramp",
    [
        ("Llama 3.1 8B / 70B, Llama 3.3 70B", 128, 8.0, 6),
        ("Llama 3.2 1B", 64, 32.0, 3),
        ("Llama 3.2 3B", 128, 32.0, 6),
    ],
)
def test_rope_from_divisors_gives_back_the_real_llama3_parameters(model, head_dim, factor, ramp):
    """The divisors llama.cpp stores for a real Llama 3.x (rope_theta 500000, low 1, high 4, original
    context 8192) give back exactly those parameters, the context as an int. Hand check: the ramp
    s = a/w - b has a = 8192 / (4 - 1), b = 1 / 3, so a/b = 8192 and 1 + 1/b = 4."""
    rope = {**LLAMA3_ROPE, "factor": factor}
    inv_freq = unscaled_frequencies(500000.0, head_dim)
    divisors = stored_divisors(inv_freq, rope)
    assert ramp_pairs(divisors, factor) == ramp  # enough to fit the ramp's line, not to guess it

    recovered = _rope_from_freq_divisors(inv_freq, divisors)

    assert recovered == rope
    assert type(recovered["original_max_position_embeddings"]) is int


def test_rope_from_divisors_gives_equivalent_parameters_with_low_freq_factor_1():
    """Only a = old/(high - low) and b = low/(high - low) show in the frequencies, so the rebuilt
    parameters have low 1, old = a/b and high = 1 + 1/b: for old 4096, low 0.8, high 3.3 that is
    a = 1638.4, b = 0.32, old 5120, high 4.125, the same frequencies. A factor that float32 cannot
    hold (2.7) comes back as written."""
    source = {
        "rope_type": "llama3",
        "factor": 2.7,
        "low_freq_factor": 0.8,
        "high_freq_factor": 3.3,
        "original_max_position_embeddings": 4096,
    }
    inv_freq = unscaled_frequencies(10000.0, 128)
    divisors = stored_divisors(inv_freq, source)

    recovered = _rope_from_freq_divisors(inv_freq, divisors)

    assert recovered == {
        "rope_type": "llama3",
        "factor": 2.7,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.125,
        "original_max_position_embeddings": 5120,
    }
    assert frequency_error(recovered, inv_freq, divisors) <= ROPE_FREQS_TOL


def test_rope_from_divisors_when_the_ramp_starts_between_integers():
    """old 8192 with low 1.5 puts the ramp's long end at a/b = 5461.33 positions, not an integer:
    the context is rounded (5461, an int) and low = 5461 b/a, high = low + 5461/a keep a and b, so
    the frequencies still match within the tolerance."""
    source = {**LLAMA3_ROPE, "low_freq_factor": 1.5}
    inv_freq = unscaled_frequencies(500000.0, 128)
    divisors = stored_divisors(inv_freq, source)

    recovered = _rope_from_freq_divisors(inv_freq, divisors)

    assert recovered["original_max_position_embeddings"] == 5461
    assert type(recovered["original_max_position_embeddings"]) is int
    low, high = 5461 * 1.5 / 8192, 5461 * 1.5 / 8192 + 5461 * 2.5 / 8192
    assert recovered["low_freq_factor"] == pytest.approx(low, rel=1e-5)
    assert recovered["high_freq_factor"] == pytest.approx(high, rel=1e-5)
    assert frequency_error(recovered, inv_freq, divisors) <= ROPE_FREQS_TOL


@pytest.mark.parametrize("old_context, ramp", [(160, 0), (128, 1)])
def test_rope_from_divisors_with_too_few_ramp_pairs_to_fit(old_context, ramp):
    """Head width 16 at rope_theta 500000 leaves pairs 5x apart in wavelength (6.3, 32, 166, 853,
    ...), so the ramp (old/4 to old) holds one pair or none and the divisors do not fix its line.
    The parameters chosen still give every pair its stored frequency."""
    source = {**LLAMA3_ROPE, "original_max_position_embeddings": old_context}
    inv_freq = unscaled_frequencies(500000.0, 16)
    divisors = stored_divisors(inv_freq, source)
    assert ramp_pairs(divisors, 8.0) == ramp

    recovered = _rope_from_freq_divisors(inv_freq, divisors)

    assert recovered["rope_type"] == "llama3"
    assert recovered["factor"] == 8.0
    assert type(recovered["original_max_position_embeddings"]) is int
    assert frequency_error(recovered, inv_freq, divisors) <= ROPE_FREQS_TOL


@pytest.mark.parametrize(
    "divisor, expected",
    [(1.0, {"rope_type": "default"}), (4.0, {"rope_type": "linear", "factor": 4.0})],
)
def test_rope_from_equal_divisors_is_default_or_linear(divisor, expected):
    inv_freq = unscaled_frequencies(10000.0, 64)
    assert _rope_from_freq_divisors(inv_freq, torch.full((32,), divisor, dtype=torch.float64)) == expected


def perturbed_llama31_divisors() -> torch.Tensor:
    divisors = stored_divisors(unscaled_frequencies(500000.0, 128), LLAMA3_ROPE)
    ramp = torch.nonzero((divisors > 1) & (divisors < 8)).flatten()
    divisors[ramp[len(ramp) // 2]] *= 1.01  # one ramp pair off the line through the others
    return divisors


@pytest.mark.parametrize(
    "head_dim, divisors, message",
    [
        (16, torch.tensor([0.5, 1, 1, 1, 8, 8, 8, 8]), "below 1"),
        (16, torch.tensor([8.0, 1, 8, 1, 8, 1, 8, 1]), "do not grow with the wavelength"),
        (128, perturbed_llama31_divisors(), "no llama3 scaling reproduces the divisors"),
        (16, torch.tensor([1.0, 1, 8, 8]), "4 divisors for 8 rope pairs"),
    ],
    ids=["below-1", "not-monotonic", "off-the-ramp", "wrong-length"],
)
def test_rope_from_divisors_refuses_what_no_supported_scaling_gives(head_dim, divisors, message):
    inv_freq = unscaled_frequencies(500000.0, head_dim)
    with pytest.raises(ValueError, match=message):
        _rope_from_freq_divisors(inv_freq, divisors.double())


def llama_cpp_rope_freqs(model) -> np.ndarray:
    """The `rope_freqs.weight` llama.cpp's converter writes for a transformers Llama with llama3
    rope scaling: per pair, the default frequency over the model's scaled one, float32."""
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    default = unscaled_frequencies(config.rope_parameters["rope_theta"], head_dim)
    return (default / model.model.rotary_emb.inv_freq).numpy()


@pytest.mark.parametrize(
    "theta, ramp, exact",
    [(500000.0, 1, False), (100.0, 3, True)],
    ids=["ramp-chosen", "ramp-fitted"],
)
def test_llama3_rope_gguf_keeps_rope_scaling(tmp_path, tokenizer_fields, theta, ramp, exact):
    """A Llama with llama3 rope scaling (factor 8, low 1, high 4, original context 128), written
    as llama.cpp does (default-rope metadata plus `rope_freqs.weight`, per-pair divisors), imports
    with llama3 rope_parameters in config.json, its rope base, per-pair frequencies within 1e-6
    (relative) of the source's and logits within 1e-4 on 12 tokens (with default rope they were off
    by ~0.16 at rope_theta 500000). At rope_theta 500000 one pair lies on the ramp (divisors 1,
    1.0146, then 8) and other parameters giving the same frequencies come back; at rope_theta 100
    three do and the ramp is fitted: the source's own parameters come back."""
    rope = {**LLAMA3_ROPE, "original_max_position_embeddings": 128, "rope_theta": theta}
    source = tiny_model(family_config("llama", rope_parameters=rope))
    divisors = llama_cpp_rope_freqs(source)
    assert ramp_pairs(torch.from_numpy(divisors), 8.0) == ramp
    rope_freqs = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
    write_gguf(
        tmp_path / "tiny.gguf",
        source,
        "llama",
        tokenizer_fields,
        name="llama",
        extra_tensors={rope_freqs: divisors},
    )

    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")

    saved = json.loads((out / "config.json").read_text())["rope_parameters"]
    assert saved["rope_type"] == "llama3"
    assert saved["rope_theta"] == theta
    assert saved["factor"] == 8.0
    if exact:
        assert saved == rope
    ours = load_model(out)
    torch.testing.assert_close(
        ours.model.rotary_emb.inv_freq, source.model.rotary_emb.inv_freq, rtol=1e-6, atol=0
    )
    assert max_logit_diff(source, out, length=12) <= MAX_ABS_DIFF


def test_gguf_whose_rope_freqs_no_scaling_gives_is_refused(tmp_path, tokenizer_fields):
    """A `rope_freqs.weight` that no supported rope scaling reproduces (here Llama 3's with one
    ramp divisor off by 1%) stops the import with a one-line PaddockError naming the file; nothing
    is written."""
    rope = {**LLAMA3_ROPE, "original_max_position_embeddings": 128, "rope_theta": 100.0}
    source = tiny_model(family_config("llama", rope_parameters=rope))
    divisors = llama_cpp_rope_freqs(source)
    ramp = np.flatnonzero((divisors > 1) & (divisors < 8))
    assert len(ramp) == 3
    divisors[ramp[1]] *= 1.01
    write_gguf(
        tmp_path / "tiny.gguf",
        source,
        "llama",
        tokenizer_fields,
        name="llama",
        extra_tensors={"rope_freqs.weight": divisors},
    )

    with pytest.raises(PaddockError) as error:
        convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")

    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'tiny.gguf'}: rope_freqs.weight: no llama3 scaling")
    assert "\n" not in message
    assert not (tmp_path / "converted").exists()


def test_gguf_rope_is_checked_on_the_config_saved(tmp_path, tokenizer_fields, monkeypatch):
    """convert_gguf recomputes the frequencies from the config it is about to save (Paddock's
    rope_inverse_frequencies) and refuses, naming the file, parameters that do not give the file's,
    whatever the rebuilding said: here a rebuilding that wrongly answers linear scaling by 8."""
    rope = {**LLAMA3_ROPE, "original_max_position_embeddings": 128, "rope_theta": 100.0}
    source = tiny_model(family_config("llama", rope_parameters=rope))
    extra = {"rope_freqs.weight": llama_cpp_rope_freqs(source)}
    write_gguf(tmp_path / "tiny.gguf", source, "llama", tokenizer_fields, name="llama", extra_tensors=extra)
    monkeypatch.setattr(
        gguf_import,
        "_rope_from_freq_divisors",
        lambda inv_freq, divisors: {"rope_type": "linear", "factor": 8.0},
    )

    with pytest.raises(PaddockError) as error:
        convert_gguf(tmp_path / "tiny.gguf", tmp_path / "converted")

    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'tiny.gguf'}: rope_parameters {{'rope_type': 'linear'")
    assert message.endswith("of the unscaled frequency; not imported")
    assert not (tmp_path / "converted").exists()


def test_a_gguf_of_another_family_or_not_a_gguf_is_refused_in_one_line(tmp_path):
    """Refused from the file's header, before transformers reads a tensor, and nothing written:
    a GGUF of an architecture Paddock does not run (Gemma 2), and a file that is not a GGUF."""
    writer = gguf.GGUFWriter(tmp_path / "gemma.gguf", "gemma2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (tmp_path / "noise.gguf").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(
        PaddockError, match=r"gemma.gguf: model_type 'gemma2' is not a family .*llama, mistral"
    ):
        convert_gguf(tmp_path / "gemma.gguf", tmp_path / "out")
    with pytest.raises(PaddockError, match=r"noise.gguf: not a readable GGUF file \(.*magic"):
        convert_gguf(tmp_path / "noise.gguf", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma.gguf", "noise.gguf"]
