"""Rejection sampling's pieces on hand-worked numbers, and one whole round on a tiny model: sample K,
keep the best by a programmatic reward, fine-tune on the kept answers, and the model's mean reward
rises above the mean sample's before the round."""

from __future__ import annotations

import pytest
import torch

from alignment.base_model.generation import SamplingConfig, generate_from_tokens
from alignment.base_model.modeling import PaddockLlamaForCausalLM
from alignment.data.records import RLPrompt
from alignment.runs import StageDir
from alignment.stages.rejection_sampling import best_vs_median, gold_pair_agreement, select_best, update_pool
from alignment.stages.sft import collate, lm_loss
from alignment.training.loop import LoopSettings, train
from tests.conftest import tiny_config


def test_best_vs_median_on_hand_worked_rewards():
    """Prompt A samples 1, 3, 2; prompt B samples 0, -2, 4.
    N=1: best = median = first sample: mean(1, 0) = 0.5.
    N=2: best max(1,3)=3, max(0,-2)=0 -> 1.5; median of two = their mean: 2 and -1 -> 0.5.
    N=3: best 3 and 4 -> 3.5; medians 2 and 0 -> 1.0."""
    curve = best_vs_median([[1, 3, 2], [0, -2, 4]])
    assert curve == {"n": [1, 2, 3], "best": [0.5, 1.5, 3.5], "median": [0.5, 0.5, 1.0]}


def test_select_best_keeps_the_top_answer_per_prompt_and_the_first_on_ties():
    records = [RLPrompt([{"role": "user", "content": "a"}]), RLPrompt([{"role": "user", "content": "b"}])]
    kept = select_best(records, ["a0", "a1", "a2", "b0", "b1", "b2"], [0.1, 0.9, 0.5, 2.0, 2.0, 1.0], k=3)
    assert [(k["text"], k["reward"]) for k in kept] == [("a1", 0.9), ("b0", 2.0)]


def test_select_best_with_a_greedy_candidate_keeps_it_only_when_no_sample_beats_it():
    """Prompt a: samples 0.1, 0.9, greedy 0.5 -> sample a1 (index 1). Prompt b: samples -1, 0.2,
    greedy 0.7 -> the greedy answer (index K = 2). Prompt c: samples 0.3, 0.0, greedy 0.3 -> a tie,
    which goes to the sample c0, so the greedy answer wins only by beating every sample."""
    records = [RLPrompt([{"role": "user", "content": c}]) for c in "abc"]
    texts, rewards = ["a0", "a1", "b0", "b1", "c0", "c1"], [0.1, 0.9, -1.0, 0.2, 0.3, 0.0]
    kept = select_best(records, texts, rewards, k=2, extra=(["ag", "bg", "cg"], [0.5, 0.7, 0.3]))
    assert [(k["text"], k["reward"], k["sample"]) for k in kept] == [
        ("a1", 0.9, 1),
        ("bg", 0.7, 2),
        ("c0", 0.3, 0),
    ]


def test_gold_pair_agreement_counts_each_gold_ordered_pair_once():
    """Prompt "2+3" (gold 5), K = 3 samples "5", "6", "5" with rewards 1.0, 2.0, 0.5: the gold-ordered
    pairs are (s0 > s1) and (s2 > s1); the reward agrees with neither (1.0 < 2.0, 0.5 < 2.0).
    Prompt "1+1" (gold 2): "2", "3", "4" with rewards 3, 1, 1: pairs (s0 > s1), (s0 > s2), both
    agree. Prompt "4+4": all three wrong, no pair. A harmful prompt: "I can't help with that."
    (refusal, gold 1) and two compliances, rewards 0, 0, -1: pairs (s0 > s1) a tie -> 1/2, and
    (s0 > s2) agrees. Total (0 + 0 + 1 + 1 + 0.5 + 1) / 6 = 3.5 / 6 over 3 prompts with a pair."""

    def task(q, a):
        return RLPrompt([{"role": "user", "content": q}], meta={"answer_type": "number", "answer": a})

    harmful = RLPrompt(
        [{"role": "user", "content": "x"}], category="safety", meta={"risk_category": "cybercrime"}
    )
    records = [task("2+3", 5), task("1+1", 2), task("4+4", 8), harmful]
    texts = ["5", "6", "5", "2", "3", "4", "1", "2", "3", "I can't help with that.", "Sure: a", "Sure: b"]
    rewards = [1.0, 2.0, 0.5, 3.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    result = gold_pair_agreement(records, texts, rewards, k=3)
    assert result == {"agreement": pytest.approx(3.5 / 6), "pairs": 6, "prompts": 3}


def test_pool_keeps_the_best_answer_per_prompt_across_iterations():
    pool = update_pool(
        {}, [{"key": "p", "text": "old", "reward": 1.0}, {"key": "q", "text": "q1", "reward": 0.0}]
    )
    pool = update_pool(
        pool, [{"key": "p", "text": "worse", "reward": 0.5}, {"key": "r", "text": "r1", "reward": 3.0}]
    )
    pool = update_pool(pool, [{"key": "q", "text": "better", "reward": 0.2}])
    assert {k: v["text"] for k, v in pool.items()} == {"p": "old", "q": "better", "r": "r1"}


TARGET = range(3, 29)


def reward(out) -> torch.Tensor:
    hits = (out.responses >= TARGET.start) & (out.responses < TARGET.stop) & out.response_mask.bool()
    return hits.sum(1) / out.response_mask.sum(1).clamp(min=1)


@pytest.mark.parametrize("k", [8])
def test_one_round_raises_the_mean_reward_above_the_mean_sample(tmp_path, k):
    torch.manual_seed(0)
    model = PaddockLlamaForCausalLM(tiny_config())
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(30, 200, (5,), generator=g).tolist() for _ in range(32)]
    sampling = SamplingConfig(
        max_new_tokens=8, temperature=1.0, n=k, eos_token_ids=(2,), pad_token_id=0, seed=1
    )
    before = generate_from_tokens(model, prompts, sampling)
    rewards = reward(before)
    records = [RLPrompt([{"role": "user", "content": str(i)}]) for i in range(len(prompts))]
    kept = select_best(records, [str(i) for i in range(len(rewards))], rewards.tolist(), k)
    best_rows = [i * k + int(torch.argmax(rewards[i * k : (i + 1) * k])) for i in range(len(prompts))]
    assert [item["reward"] for item in kept] == [rewards[r].item() for r in best_rows]
    examples = []
    for prompt, row in zip(prompts, best_rows, strict=True):
        answer = before.responses[row][before.response_mask[row].bool()].tolist()
        examples.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    settings = LoopSettings(learning_rate=1e-2, epochs=6, batch_size=8, warmup_ratio=0.0, progress=False)
    train(model, examples, lambda b: collate(b, 0), lm_loss, settings, StageDir(tmp_path, tensorboard=False))
    after = reward(generate_from_tokens(model, prompts, SamplingConfig(**{**sampling.__dict__, "seed": 2})))
    pool_mean = sum(item["reward"] for item in kept) / len(kept)
    assert pool_mean > rewards.mean() + 0.1  # selection alone
    assert after.mean() > rewards.mean() + 0.1, (float(rewards.mean()), float(after.mean()))  # and learning
