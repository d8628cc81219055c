"""The generation engine: greedy equals transformers, padding-invariant, log-probs consistent,
n samples per prompt, stop conditions, row compaction, PEFT models."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from alignment.base_model.generation import (
    SamplingConfig,
    filter_logits,
    generate,
    generate_from_tokens,
    inverse_cdf_sample,
    left_pad,
)
from alignment.base_model.modeling import PaddockLlamaForCausalLM
from tests.conftest import tiny_config


def twins():
    torch.manual_seed(0)
    reference = LlamaForCausalLM(tiny_config()).eval()
    ours = PaddockLlamaForCausalLM(tiny_config()).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


PROMPTS = [[5, 17, 33, 9, 100, 41, 7], [12, 250], [60, 61, 62, 63]]


def test_greedy_equals_transformers_generate():
    reference, ours = twins()
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        expected = reference.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
            pad_token_id=0,
        )
        got = generate(ours, ids, torch.ones_like(ids), SamplingConfig(max_new_tokens=12, temperature=0))
        assert torch.equal(got.sequences, expected)


def test_batched_left_padded_rows_equal_one_prompt_at_a_time():
    _, ours = twins()
    cfg = SamplingConfig(max_new_tokens=10, temperature=0)
    ids, mask = left_pad(PROMPTS, pad_token_id=0)
    batched = generate(ours, ids, mask, cfg)
    for row, prompt in enumerate(PROMPTS):
        alone = generate(ours, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), cfg)
        assert torch.equal(batched.sequences[row, batched.prompt_length :], alone.sequences[0, len(prompt) :])


def test_seeded_sampling_is_reproducible_and_rows_stop_at_eos():
    _, ours = twins()
    ids, mask = left_pad(PROMPTS, pad_token_id=0)
    first = generate(ours, ids, mask, SamplingConfig(max_new_tokens=20, temperature=1.0, seed=7))
    again = generate(ours, ids, mask, SamplingConfig(max_new_tokens=20, temperature=1.0, seed=7))
    assert torch.equal(first.sequences, again.sequences)
    # Make the first sampled token of row 0 an EOS id: that row must stop right there.
    eos = int(first.sequences[0, first.prompt_length])
    stopped = generate(
        ours, ids, mask, SamplingConfig(max_new_tokens=20, temperature=1.0, seed=7, eos_token_ids=(eos,))
    )
    assert stopped.response_mask[0].tolist() == [1] + [0] * (stopped.response_mask.shape[1] - 1)


def test_top_p_keeps_the_smallest_set_reaching_p():
    """probs 0.5, 0.3, 0.15, 0.05: with top_p 0.75 the first two (0.8 >= 0.75) survive, not the third."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = filter_logits(logits, top_k=0, top_p=0.75).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    assert filter_logits(logits, top_k=1, top_p=1.0).isfinite().tolist() == [[True, False, False, False]]


def teacher_forced_logprobs(model, out, temperature=1.0, top_k=0, top_p=1.0):
    logits = model(out.sequences, attention_mask=out.attention_mask).logits[:, out.prompt_length - 1 : -1]
    logits = logits / temperature
    logits = torch.stack([filter_logits(step, top_k, top_p) for step in logits.unbind(1)], dim=1)
    return logits.log_softmax(-1).gather(-1, out.responses[..., None]).squeeze(-1)


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (20, 1.0), (0, 0.9)])
def test_logprobs_match_teacher_forcing_under_each_filter(top_k, top_p):
    _, ours = twins()
    cfg = SamplingConfig(max_new_tokens=10, temperature=1.3, top_k=top_k, top_p=top_p, n=2, seed=11)
    out = generate_from_tokens(ours, PROMPTS, cfg)
    expected = teacher_forced_logprobs(ours, out, 1.3, top_k, top_p)
    real = out.response_mask.bool()
    torch.testing.assert_close(out.logprobs[real], expected[real], atol=1e-4, rtol=1e-4)


def test_n_samples_per_prompt_are_prompt_major_and_differ():
    _, ours = twins()
    out = generate_from_tokens(ours, PROMPTS, SamplingConfig(max_new_tokens=12, temperature=1.0, n=4, seed=5))
    assert out.sequences.shape[0] == len(PROMPTS) * 4
    for i, prompt in enumerate(PROMPTS):
        rows = out.sequences[i * 4 : (i + 1) * 4]
        assert all(r[out.prompt_length - len(prompt) : out.prompt_length].tolist() == prompt for r in rows)
        assert len({tuple(r[out.prompt_length :].tolist()) for r in rows}) > 1  # independent samples
    greedy = generate_from_tokens(ours, PROMPTS, SamplingConfig(max_new_tokens=6, temperature=0, n=3))
    single = generate_from_tokens(ours, PROMPTS, SamplingConfig(max_new_tokens=6, temperature=0))
    assert torch.equal(greedy.responses, single.responses.repeat_interleave(3, dim=0))


def test_dropping_finished_rows_does_not_change_any_sample():
    """Rows are dropped from the batch as they finish; their neighbours must not notice."""
    _, ours = twins()
    base = dict(max_new_tokens=16, temperature=1.0, n=4, seed=2, eos_token_ids=(7, 8, 9, 10, 11, 12))
    never = generate_from_tokens(ours, PROMPTS, SamplingConfig(**base, compact_below=0.0))
    always = generate_from_tokens(ours, PROMPTS, SamplingConfig(**base, compact_below=1.01))
    assert 0 < int(never.response_mask.sum()) < never.response_mask.numel()  # some rows did stop early
    assert torch.equal(never.sequences, always.sequences)
    assert torch.equal(never.response_mask, always.response_mask)
    torch.testing.assert_close(never.logprobs, always.logprobs, atol=1e-5, rtol=1e-5)


def test_stop_strings_end_a_row_where_the_string_completes(smollm2_tokenizer):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(smollm2_tokenizer), pad_token_id=smollm2_tokenizer.pad_token_id)
    model = PaddockLlamaForCausalLM(config).eval()
    prompts = [smollm2_tokenizer.encode("Tell me a story", add_special_tokens=False)] * 2
    free = generate_from_tokens(model, prompts, SamplingConfig(max_new_tokens=24, temperature=1.0, seed=4))
    text = smollm2_tokenizer.decode(free.responses[0, 6:9])  # a stop string from the middle of row 0
    cfg = SamplingConfig(max_new_tokens=24, temperature=1.0, seed=4, stop_strings=(text,))
    stopped = generate_from_tokens(model, prompts, cfg, tokenizer=smollm2_tokenizer)
    length = int(stopped.response_mask[0].sum())
    assert length <= 9
    assert text in smollm2_tokenizer.decode(stopped.responses[0, :length])
    assert text not in smollm2_tokenizer.decode(stopped.responses[0, : length - 1])
    with pytest.raises(ValueError, match="need the tokenizer"):
        generate_from_tokens(model, prompts, cfg)


def test_engine_runs_a_peft_lora_model():
    peft = pytest.importorskip("peft")
    _, ours = twins()
    plain = generate_from_tokens(ours, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=0))
    wrapped = peft.get_peft_model(ours, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    same = generate_from_tokens(wrapped, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=0))
    assert torch.equal(same.sequences, plain.sequences)  # LoRA B starts at zero: same model
    for name, param in wrapped.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    out = generate_from_tokens(wrapped, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=1.0, seed=1))
    real = out.response_mask.bool()
    expected = teacher_forced_logprobs(wrapped, out)
    torch.testing.assert_close(out.logprobs[real], expected[real], atol=1e-4, rtol=1e-4)


def test_inverse_cdf_sampling_frequencies():
    """probs 0.5 / 0.3 / 0.2 / 0: uniforms u in [0, 1) map to token 0 for u < 0.5, token 1 for
    0.5 <= u < 0.8, token 2 for 0.8 <= u < 1.0, never token 3; so u = 0.0, 0.49, 0.5, 0.79, 0.8, 0.999
    give 0, 0, 1, 1, 2, 2, and 40 000 random draws land within 1 % of the probabilities."""
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    u = torch.tensor([0.0, 0.49, 0.5, 0.79, 0.8, 0.999])[:, None]
    tokens, logprobs = inverse_cdf_sample(probs.expand(6, 4), u)
    assert tokens.tolist() == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(logprobs, torch.tensor([0.5, 0.5, 0.3, 0.3, 0.2, 0.2]).log())
    # Unnormalised weights give the same draws: 2 * probs.
    assert inverse_cdf_sample(2 * probs.expand(6, 4), u)[0].tolist() == [0, 0, 1, 1, 2, 2]
    draws, _ = inverse_cdf_sample(probs.expand(40_000, 4), torch.rand(40_000, 1, dtype=torch.float64))
    freq = torch.bincount(draws, minlength=4).float() / 40_000
    torch.testing.assert_close(freq, probs[0], atol=0.01, rtol=0)
    assert freq[3] == 0


@pytest.mark.slow
def test_compiled_decode_step_gives_the_eager_tokens():
    _, ours = twins()
    eager = generate_from_tokens(ours, PROMPTS, SamplingConfig(max_new_tokens=6, temperature=0))
    compiled = generate_from_tokens(
        ours, PROMPTS, SamplingConfig(max_new_tokens=6, temperature=0, compile=True)
    )
    assert torch.equal(compiled.sequences, eager.sequences)
