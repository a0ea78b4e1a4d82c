"""Masking: exactly the reply tokens and their EOS are scored, under the chat and the plain template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tunesmith.data.chat import IGNORE, ChatFormat, Encoded, truncate
from tunesmith.errors import ConfigError

PAIR = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."}]


@pytest.fixture(scope="module")
def tok(smol_tokenizer):
    return AutoTokenizer.from_pretrained(smol_tokenizer)


def scored(sample: Encoded) -> list[int]:
    return [i for i, label in zip(sample.ids, sample.labels, strict=True) if label != IGNORE]


def test_chat_template_scores_the_reply_and_its_eos_only(tok):
    fmt = ChatFormat(tok, "chat")
    sample = fmt.encode(PAIR, 512)
    reply = tok("It is 4.", add_special_tokens=False)["input_ids"]
    assert scored(sample) == reply + [tok.eos_token_id], "the reply, then EOS, and nothing else"
    # The unscored part is exactly what generation starts from: train and inference see the same tokens.
    prompt = fmt.prompt_ids(PAIR, 512)
    assert sample.ids[: len(prompt)] == prompt
    assert all(label == IGNORE for label in sample.labels[: len(prompt)])
    assert sample.ids[len(prompt) :] == reply + [tok.eos_token_id]
    assert sample.labels[len(prompt) :] == sample.ids[len(prompt) :]


def test_plain_template_appends_eos_and_masks_the_instruction(tok):
    fmt = ChatFormat(tok, "plain")
    sample = fmt.encode(PAIR, 512)
    text = tok.decode(sample.ids)
    assert text.startswith("### Instruction:\nWhat is 2+2?\n\n### Response:\n")
    assert scored(sample)[-1] == tok.eos_token_id
    assert tok.decode(scored(sample)) == "It is 4." + tok.eos_token


def test_every_assistant_turn_is_a_target(tok):
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    for template in ("chat", "plain"):
        sample = ChatFormat(tok, template).encode(conv, 512)
        eos = tok.eos_token_id
        # Two targets, each ending with EOS; the user turns and the system prompt are not scored.
        runs, current = [], []
        for i, label in zip(sample.ids, sample.labels, strict=True):
            if label != IGNORE:
                current.append(i)
            elif current:
                runs.append(current)
                current = []
        runs += [current] if current else []
        assert [tok.decode(r) for r in runs] == ["Hello." + tok.eos_token, "Goodbye." + tok.eos_token], template
        assert all(r[-1] == eos for r in runs)


def test_long_prompts_are_cut_from_the_left_and_targets_kept(tok):
    fmt = ChatFormat(tok, "chat")
    long = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Short reply."}]
    full = fmt.encode(long, 10_000)
    cut = fmt.encode(long, 64)
    assert len(cut.ids) == 64 and cut.truncated == "prompt"
    assert scored(cut) == scored(full), "the whole target survives"
    assert cut.ids == full.ids[-64:]


def test_a_target_longer_than_max_length_is_reported_not_dropped():
    sample = Encoded([1, 2, 3, 4, 5, 6], [IGNORE, IGNORE, 3, 4, 5, 6])
    cut = truncate(sample, 4)
    assert cut.truncated == "target" and cut.ids == [2, 3, 4, 5] and cut.labels == [IGNORE, 3, 4, 5]


def test_chat_template_required_when_asked(tiny_model):
    bert = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(ConfigError, match="no chat template"):
        ChatFormat(bert, "chat")
