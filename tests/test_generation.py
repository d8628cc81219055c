"""The simple sampling loop: greedy equals transformers, padding-invariant, log-probs consistent."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM

from alignment.base_model.generation import SamplingConfig, filter_logits, generate, left_pad
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


def test_sampled_logprobs_equal_a_teacher_forced_forward():
    _, ours = twins()
    cfg = SamplingConfig(max_new_tokens=8, temperature=0.7, top_k=50, seed=3)
    ids, mask = left_pad(PROMPTS, pad_token_id=0)
    out = generate(ours, ids, mask, cfg)
    full_mask = torch.cat([mask, out.response_mask], dim=1)
    logits = ours(out.sequences, attention_mask=full_mask).logits[:, out.prompt_length - 1 : -1] / 0.7
    logits = torch.stack([filter_logits(step, 50, 1.0) for step in logits.unbind(1)], dim=1)
    expected = logits.log_softmax(-1).gather(-1, out.sequences[:, out.prompt_length :, None]).squeeze(-1)
    real = out.response_mask.bool()
    torch.testing.assert_close(out.logprobs[real], expected[real], atol=1e-4, rtol=1e-4)


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
