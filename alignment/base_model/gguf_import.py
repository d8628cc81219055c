"""GGUF import: dequantise a GGUF file of a supported family through transformers into an HF
safetensors checkpoint, with what transformers' GGUF reader leaves out put back (Qwen3's head
width, Llama 3.x's rope scaling).

transformers turns a Mistral GGUF into a Llama checkpoint (llama.cpp writes Mistral as
architecture `llama`, with no sliding window): exact for Mistral v0.2 and later, which have no
window (tests/test_gguf_families.py).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import torch

from alignment.base_model.checkpoint import publish_dir
from alignment.base_model.families import SUPPORTED_MODEL_TYPES, unsupported_message
from alignment.base_model.modeling import HEADS, llama3_scaled, rope_inverse_frequencies
from alignment.errors import PaddockError

log = logging.getLogger(__name__)


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF file of a supported family through transformers and save it as an HF
    safetensors checkpoint. Llama 3.x rope scaling, which llama.cpp writes as a `rope_freqs.weight`
    tensor that transformers drops, is rebuilt from that tensor (see _rope_from_freq_divisors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise PaddockError(f"{gguf_file}: no such GGUF file")
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        reader = open_gguf(gguf_file)
        arch = reader.get_field("general.architecture").contents()
        if arch not in SUPPORTED_MODEL_TYPES:  # llama.cpp names these families as transformers does
            raise PaddockError(f"{gguf_file}: {unsupported_message(arch)}")
        # transformers reads no head width from a qwen3 GGUF: Qwen3Config's default (128) stands
        # whatever the file says, and any other width fails to load. Pass the one llama.cpp wrote.
        overrides = {}
        if arch == "qwen3":
            key_length = reader.get_field("qwen3.attention.key_length")
            if key_length is not None:
                overrides["head_dim"] = key_length.contents()
        rope_freqs = _gguf_rope_freqs(reader, arch)
        del reader
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, **overrides
        )
        # The weights are dequantised now, but transformers refuses to save a model it loaded from
        # GGUF; re-home them in Paddock's class with the GGUF quantization_config dropped.
        settings = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
        settings["_name_or_path"] = str(final)
        if rope_freqs is not None:
            settings["rope_parameters"] = _rope_parameters_from_freqs(
                gguf_file, model.config, settings, *rope_freqs
            )
        ours = HEADS["causal_lm"](type(model.config).from_dict(settings))
        ours.load_state_dict(model.state_dict(), strict=True)
        ours.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        return publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_gguf(gguf_file: Path):
    """gguf's reader on the file, after checking it is a GGUF that names its architecture."""
    import gguf

    try:
        reader = gguf.GGUFReader(gguf_file)
    except (ValueError, OSError, IndexError) as err:
        raise PaddockError(f"{gguf_file}: not a readable GGUF file ({str(err).splitlines()[0]})") from None
    if reader.get_field("general.architecture") is None:
        raise PaddockError(f"{gguf_file}: no general.architecture in the GGUF metadata")
    return reader


# How far the frequencies rebuilt from a GGUF's rope_freqs may stray from the file's, as a fraction
# of the unscaled frequency. Both sides are float32 sums: the file's divisors as llama.cpp's converter
# rounded them, ours from parameters equivalent to (not the same as) the ones it used. Relative to
# the scaled frequency that rounding grows with the factor (~1e-5 seen at factor 64), relative to the
# unscaled one it stays below ~5e-7; a wrong parameter moves some pair by 1e-3 or more.
ROPE_FREQS_TOL = 1e-6


def _gguf_rope_freqs(reader, arch: str) -> tuple[float, torch.Tensor] | None:
    """The rope base (`{arch}.rope.freq_base`, llama.cpp's default 10000 if absent) and the
    `rope_freqs.weight` divisors (float64) of a GGUF that has them, else None.

    llama.cpp's converter writes Llama 3.x's rope scaling as that tensor, one divisor per rotated
    pair (pair i turns at rope_theta ** (-2i/d) / divisor_i), and no rope-scaling metadata.
    transformers' GGUF reader drops the tensor, so convert_gguf rebuilds the scaling from it.
    """
    import gguf

    tensor = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if tensor is None:
        return None
    base = reader.get_field(f"{arch}.rope.freq_base")
    theta = float(base.contents()) if base is not None else 10000.0
    divisors = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(-1)
    return theta, torch.tensor(divisors, dtype=torch.float64)


def _rope_parameters_from_freqs(gguf_file: Path, config, settings: dict, theta: float, divisors) -> dict:
    """rope_parameters for `settings` (a GGUF's config) that turn each rope pair at the file's
    frequency, theta ** (-2i/d) / divisor_i, checked on the config built from them."""
    unscaled = type(config).from_dict(
        {**settings, "rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    )
    inv_freq = rope_inverse_frequencies(unscaled)
    if len(divisors) != len(inv_freq):
        raise PaddockError(
            f"{gguf_file}: rope_freqs.weight has {len(divisors)} divisors but the heads rotate "
            f"{len(inv_freq)} pairs; partial rotary embeddings are not supported"
        )
    try:
        params = {**_rope_from_freq_divisors(inv_freq, divisors), "rope_theta": theta}
    except ValueError as err:
        raise PaddockError(f"{gguf_file}: rope_freqs.weight: {err}; not imported") from None
    got = rope_inverse_frequencies(type(config).from_dict({**settings, "rope_parameters": params}))
    error = _rope_freqs_error(got, inv_freq, divisors)
    if error > ROPE_FREQS_TOL:
        raise PaddockError(
            f"{gguf_file}: rope_parameters {params} rebuilt from rope_freqs.weight give frequencies off "
            f"by {error:.1e} of the unscaled frequency; not imported"
        )
    log.info("%s: rope scaling from rope_freqs.weight: %s", gguf_file, params)
    return params


def _rope_freqs_error(got: torch.Tensor, inv_freq: torch.Tensor, divisors: torch.Tensor) -> float:
    """Largest difference between frequencies `got` and inv_freq / divisors, as a fraction of the
    unscaled frequency inv_freq."""
    inv = inv_freq.double()
    return ((got.double() - inv / divisors).abs() / inv).max().item()


def _rope_from_freq_divisors(inv_freq: torch.Tensor, divisors: torch.Tensor) -> dict:
    """The rope scaling (rope_parameters less rope_theta) whose frequencies are inv_freq / divisors,
    for unscaled frequencies `inv_freq` (float32, as rope_inverse_frequencies makes them). Raises
    ValueError when no default, linear or llama3 scaling reproduces them within ROPE_FREQS_TOL.

    All divisors 1 is no scaling; all equal to c is linear scaling by c. Otherwise llama3, which
    with wavelengths w_i = 2 pi / inv_freq_i divides by f_i = 1 where w_i < old/high, by `factor`
    where w_i > old/low, and in between by f_i with

        1/f_i = (1 - s_i)/factor + s_i,    s_i = (old/w_i - low)/(high - low)

    (old = original_max_position_embeddings, low/high = low/high_freq_factor). So factor = max f,
    and on the ramp (1 < f_i < factor) s_i = (1/f_i - 1/factor)/(1 - 1/factor) is linear in
    u_i = 1/w_i: s_i = a u_i - b, a = old/(high - low), b = low/(high - low). The ramp's ends,
    s = 0 and s = 1, are at w = a/b = old/low and w = a/(b + 1) = old/high, so a and b alone fix
    every frequency: any old, low, high giving them will do. Taking old = round(a/b) (an integer,
    as transformers wants) and low = old b/a gives high = low + old/a; where a/b is close to an
    integer, as for the real models, low = 1 and high = 1 + 1/b rounded to a simple fraction
    reproduce the divisors as well and are preferred (Llama 3.1's old 8192, low 1, high 4 and
    factor 8 come back exactly). Where no pair is slow enough to be divided by the whole factor,
    max f is a ramp pair's divisor and not the factor; it still serves, as 1/f_i = 1/factor +
    (1 - 1/factor) s_i is linear in u_i too, and any factor with its own a, b draws the same line.

    a and b are the least-squares line through the ramp pairs (s_i, u_i) when there are two or
    more. With fewer the divisors do not fix the line, and one is chosen that keeps every pair
    where it is: through the single ramp pair if there is one, reaching s = 0 before the nearest
    pair divided by factor and s = 1 before the nearest undivided one, with a/b an integer.
    """
    inv = inv_freq.double()
    f = torch.as_tensor(divisors, dtype=torch.float64)
    if f.shape != inv.shape:
        raise ValueError(f"{len(f)} divisors for {len(inv)} rope pairs")
    if not (torch.isfinite(f).all() and (f > 0).all()):
        raise ValueError("divisors must be finite and positive")
    tol = ROPE_FREQS_TOL
    if ((f - 1).abs() <= tol).all():
        return {"rope_type": "default"}
    if ((f - f[0]).abs() <= tol * f[0]).all():
        params = {"rope_type": "linear", "factor": _simple(f[0].item())}
        if _rope_freqs_error(inv_freq / params["factor"], inv_freq, f) > tol:
            params["factor"] = f[0].item()
        return params
    if f.min() < 1 - tol:
        raise ValueError(f"a divisor of {f.min().item():.6g} (below 1) is neither llama3 nor linear scaling")
    factor = f.max().item()
    u = inv / (2 * math.pi)
    short = f <= 1 + tol
    long = f >= factor * (1 - tol)
    ramp = ~short & ~long
    s = (1 / f - 1 / factor) / (1 - 1 / factor)
    if ramp.sum() >= 2:
        a, b = _line_through(u[ramp], s[ramp])
    else:
        a, b = _line_in_gap(u, s, short, long, ramp)
    if not (a > 0 and b > 0 and math.isfinite(a / b)):
        raise ValueError(f"the ramp's line (slope {a:.6g}, offset {b:.6g}) is not llama3 scaling")
    old = max(1, round(a / b))
    simple = {"factor": _simple(factor), "low_freq_factor": 1.0, "high_freq_factor": _simple(1 + 1 / b)}
    exact = {"factor": factor, "low_freq_factor": old * b / a, "high_freq_factor": old * b / a + old / a}
    errors = []
    # The simple values only when they fit as closely as the real models' do (below ~1e-7), not
    # merely within the tolerance: rounding a/b to an integer tilts the ramp a little.
    for candidate, within in ((simple, tol / 4), (exact, tol)):
        params = {"rope_type": "llama3", **candidate, "original_max_position_embeddings": old}
        errors.append(_rope_freqs_error(llama3_scaled(inv_freq, params), inv_freq, f))
        if errors[-1] <= within:
            return params
    raise ValueError(
        f"no llama3 scaling reproduces the divisors (best fit: factor {factor:.6g}, original context "
        f"{old}, off by {min(errors):.1e} of the unscaled frequency)"
    )


def _line_through(u: torch.Tensor, s: torch.Tensor) -> tuple[float, float]:
    """Least-squares a, b of s = a u - b."""
    du, ds = u - u.mean(), s - s.mean()
    a = ((du * ds).sum() / (du * du).sum()).item()
    return a, a * u.mean().item() - s.mean().item()


def _line_in_gap(u, s, short, long, ramp) -> tuple[float, float]:
    """a, b of a llama3 ramp line s = a u - b for divisors with at most one ramp pair: through that
    pair, s = 0 between it and the nearest long-wavelength pair (u_long), s = 1 between it and
    the nearest short one (u_short), with the ramp's long end a/b an integer wavelength."""
    u_long = u[long].max().item() if long.any() else 0.0
    u_short = u[short].min().item() if short.any() else math.inf
    if ramp.any():
        u_r, s_r = u[ramp].item(), s[ramp].item()
        if not u_long < u_r < u_short:
            raise ValueError("divisors do not grow with the wavelength")
        # The gentlest slope keeping the neighbours off the ramp, a little steeper to clear them: a
        # gentle ramp keeps the float32 rounding of s, which 1/f carries, small.
        a = 1.25 * max(s_r / (u_r - u_long), (1 - s_r) / (u_short - u_r))
        old = round(a / (a * u_r - s_r))
        if old * u_r <= 1:
            raise ValueError("the ramp is shorter than a whole position")
        a = old * s_r / (old * u_r - 1)
        return a, a / old
    if not u_long < u_short:
        raise ValueError("divisors do not grow with the wavelength")
    # No ramp pair: s runs from 0 to 1 over the middle third of the gap.
    u_low = u_long + (u_short - u_long) / 3
    u_high = u_long + 2 * (u_short - u_long) / 3
    old = max(1, round(1 / u_low))
    a = 1 / (u_high - 1 / old)
    return a, a / old


def _simple(x: float) -> float:
    """x as the simplest fraction (denominator up to 64) within 1e-6 relative of it, else x."""
    near = float(Fraction(x).limit_denominator(64))
    return near if abs(near - x) <= 1e-6 * abs(x) else x
