"""Dialogues -> token ids + loss labels, in the Llama 2 chat format or the tokenizer's own template.

Both formats are built turn by turn, so the boundary of every assistant answer is known exactly
instead of being searched for in the decoded text. `loss_on="all"` trains on every assistant
turn (SFT); `loss_on="last"` only on the final one, every earlier token masked (Ghost Attention,
where earlier turns were sampled with an instruction the training input no longer shows).

Llama 2 format (the paper's; `<s>`/`</s>` are the tokenizer's BOS/EOS):
    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST] ...
Loss covers each answer and its EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100
STYLES = ("llama2", "template")
LOSS_ON = ("all", "last")


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def _check(messages: list[dict]) -> tuple[str | None, list[dict]]:
    if not messages:
        raise ValueError("empty dialogue")
    system = None
    if messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise ValueError(f"message {i}: expected role {expected!r}, got {message.get('role')!r}")
    return system, messages


def _text(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def encode_llama2(messages: list[dict], tokenizer, loss_on: str = "all", add_generation_prompt: bool = False):
    """The Llama 2 chat format. A dialogue ending in a user turn gives a prompt for generation."""
    system, turns = _check(messages)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError("the Llama 2 format needs a tokenizer with BOS and EOS tokens")
    last_answer = len(turns) - 1 if turns[-1]["role"] == "assistant" else -1
    ids, labels = [], []
    for i in range(0, len(turns), 2):
        user = turns[i]["content"].strip()
        if i == 0 and system:
            user = f"<<SYS>>\n{system.strip()}\n<</SYS>>\n\n{user}"
        prompt = [bos, *_text(tokenizer, f"[INST] {user} [/INST]")]
        ids += prompt
        labels += [IGNORE_INDEX] * len(prompt)
        if i + 1 < len(turns):
            answer = [*_text(tokenizer, " " + turns[i + 1]["content"].strip()), eos]
            trained = loss_on == "all" or i + 1 == last_answer
            ids += answer
            labels += answer if trained else [IGNORE_INDEX] * len(answer)
    if not add_generation_prompt and turns[-1]["role"] == "user":
        raise ValueError("dialogue ends with a user turn; pass add_generation_prompt=True to build a prompt")
    return Encoded(ids, labels)


def encode_template(
    messages: list[dict], tokenizer, loss_on: str = "all", add_generation_prompt: bool = False
):
    """The tokenizer's chat template. Each assistant answer's span is found by rendering the
    conversation up to it with and without the answer; the template must be prefix-stable
    (rendering more turns only appends), which is checked."""
    _check(messages)
    render = lambda msgs, gen: list(  # noqa: E731
        tokenizer.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True, return_dict=False)
    )
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    last = assistant_turns[-1] if assistant_turns else -1
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    labels: list[int] = []
    for i in assistant_turns:
        before = render(messages[:i], True)
        upto = render(messages[: i + 1], False)
        if before[: len(ids)] != ids or upto[: len(before)] != before:
            raise ValueError("chat template is not prefix-stable; use style 'llama2'")
        answer = upto[len(before) :]
        # Train on the answer and its end-of-turn token, not on the separator the template adds after.
        end = answer.index(eos) + 1 if eos in answer else len(answer)
        trained = loss_on == "all" or i == last
        labels += [IGNORE_INDEX] * (len(before) - len(ids))
        labels += (answer[:end] if trained else [IGNORE_INDEX] * end) + [IGNORE_INDEX] * (len(answer) - end)
        ids = upto
    if messages[-1]["role"] == "user":
        if not add_generation_prompt:
            raise ValueError(
                "dialogue ends with a user turn; pass add_generation_prompt=True to build a prompt"
            )
        full = render(messages, True)
        if full[: len(ids)] != ids:
            raise ValueError("chat template is not prefix-stable; use style 'llama2'")
        labels += [IGNORE_INDEX] * (len(full) - len(ids))
        ids = full
    return Encoded(ids, labels)


def encode_dialogue(
    messages: list[dict],
    tokenizer,
    style: str = "template",
    loss_on: str = "all",
    add_generation_prompt: bool = False,
) -> Encoded:
    """Token ids and labels for a dialogue; `style` "llama2" or "template", `loss_on` "all" or "last"."""
    if style not in STYLES:
        raise ValueError(f"unknown chat style {style!r}; use one of {STYLES}")
    if loss_on not in LOSS_ON:
        raise ValueError(f"unknown loss_on {loss_on!r}; use one of {LOSS_ON}")
    encode = encode_llama2 if style == "llama2" else encode_template
    return encode(messages, tokenizer, loss_on=loss_on, add_generation_prompt=add_generation_prompt)


def encode_prompt(messages: list[dict], tokenizer, style: str = "template") -> list[int]:
    """Token ids of a conversation ending in a user turn, ready for the assistant to answer."""
    return encode_dialogue(messages, tokenizer, style=style, add_generation_prompt=True).input_ids
