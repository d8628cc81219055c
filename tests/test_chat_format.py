"""Exact token boundaries of the chat formats on the SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from alignment.data.chat_format import IGNORE_INDEX, encode_dialogue, encode_prompt

SINGLE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
MULTI = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]
SYSTEM = [{"role": "system", "content": "Be brief."}]


def trained_spans(tokenizer, encoded) -> list[str]:
    """Decoded runs of consecutive loss-bearing tokens."""
    spans, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token  # labels are the tokens themselves, unshifted
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def test_template_single_turn_without_system(smollm2_tokenizer):
    tok = smollm2_tokenizer
    enc = encode_dialogue(SINGLE, tok, style="template")
    text = tok.decode(enc.input_ids)
    # SmolLM2's template inserts its default system message when none is given.
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n")
    assert trained_spans(tok, enc) == ["Hello!<|im_end|>"]
    assert enc.loss_tokens == 3  # "Hello", "!", "<|im_end|>"
    assert enc.labels[-1] == IGNORE_INDEX  # the newline after <|im_end|> carries no loss


def test_template_multi_turn_with_system_all_and_last(smollm2_tokenizer):
    tok = smollm2_tokenizer
    enc = encode_dialogue(SYSTEM + MULTI, tok, style="template")
    assert tok.decode(enc.input_ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        "Hello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    )
    assert len(enc.input_ids) == 38
    assert trained_spans(tok, enc) == ["Hello!<|im_end|>", "4<|im_end|>"]
    last = encode_dialogue(SYSTEM + MULTI, tok, style="template", loss_on="last")
    assert last.input_ids == enc.input_ids
    assert trained_spans(tok, last) == ["4<|im_end|>"]
    assert last.loss_tokens == 2


def test_llama2_single_turn_without_system(smollm2_tokenizer):
    tok = smollm2_tokenizer
    enc = encode_dialogue(SINGLE, tok, style="llama2")
    assert tok.decode(enc.input_ids) == "<|im_start|>[INST] Hi [/INST] Hello!<|im_end|>"
    assert trained_spans(tok, enc) == [" Hello!<|im_end|>"]
    assert enc.input_ids[0] == tok.bos_token_id and enc.input_ids[-1] == tok.eos_token_id


def test_llama2_multi_turn_with_system(smollm2_tokenizer):
    tok = smollm2_tokenizer
    enc = encode_dialogue(SYSTEM + MULTI, tok, style="llama2")
    assert tok.decode(enc.input_ids) == (
        "<|im_start|>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello!<|im_end|>"
        "<|im_start|>[INST] 2+2? [/INST] 4<|im_end|>"
    )
    assert len(enc.input_ids) == 44
    assert trained_spans(tok, enc) == [" Hello!<|im_end|>", " 4<|im_end|>"]
    last = encode_dialogue(SYSTEM + MULTI, tok, style="llama2", loss_on="last")
    assert trained_spans(tok, last) == [" 4<|im_end|>"]


@pytest.mark.parametrize("style", ["llama2", "template"])
def test_prompt_ends_ready_for_the_answer(smollm2_tokenizer, style):
    tok = smollm2_tokenizer
    ids = encode_prompt(SYSTEM + MULTI[:3], tok, style=style)
    full = encode_dialogue(SYSTEM + MULTI, tok, style=style).input_ids
    assert full[: len(ids)] == ids  # the prompt is exactly the dialogue before the last answer
    expected_end = " [/INST]" if style == "llama2" else "<|im_start|>assistant\n"
    assert tok.decode(ids).endswith(expected_end)


def test_bad_dialogues_are_rejected(smollm2_tokenizer):
    tok = smollm2_tokenizer
    with pytest.raises(ValueError, match="expected role 'user'"):
        encode_dialogue([{"role": "assistant", "content": "x"}], tok)
    with pytest.raises(ValueError, match="ends with a user turn"):
        encode_dialogue(MULTI[:3], tok, style="llama2")
    with pytest.raises(ValueError, match="unknown chat style"):
        encode_dialogue(SINGLE, tok, style="chatml")
