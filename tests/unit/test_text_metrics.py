"""Generation metrics against hand-computed values."""

from __future__ import annotations

import pytest

from tunesmith.text_metrics import extract, generation_scores, rouge_l, token_f1


def test_token_f1_is_squad_style():
    assert token_f1("The cat sat", "the cat sat.") == 1.0
    # overlap {cat}: precision 1/2, recall 1/3 -> F1 0.4
    assert token_f1("a cat", "the cat sat") == pytest.approx(0.4)
    assert token_f1("dog", "cat") == 0.0


def test_rouge_l_uses_the_longest_common_subsequence():
    # LCS of "a b c d" and "a c e d" is "a c d" (3): P = 3/4, R = 3/4
    assert rouge_l("a b c d", "a c e d") == pytest.approx(0.75)
    assert rouge_l("x y", "a b") == 0.0
    assert rouge_l("police killed the gunman", "the gunman was killed by police") == pytest.approx(
        2 * (2 / 4) * (2 / 6) / (2 / 4 + 2 / 6)
    )


def test_answer_pattern_extracts_the_final_answer():
    assert extract("so 3+4 = 7\n#### 7", r"#### (.+)") == "7"
    assert extract("no marker here", r"#### (.+)") is None
    scores = generation_scores(["work\n#### 72", "#### 5", "72"], ["x\n#### 72", "#### 6", "#### 72"], r"#### (.+)")
    assert scores["exact_match"] == pytest.approx(1 / 3)


def test_json_replies_are_checked_field_by_field():
    golds = ['{"category": "billing", "urgency": "high"}', '{"category": "technical", "urgency": "low"}']
    preds = ['{"category": "billing", "urgency": "low"}', "not json at all"]
    scores = generation_scores(preds, golds, None)
    assert scores["json_valid"] == 0.5
    assert scores["json_fields"] == {"category": 0.5, "urgency": 0.0}
    assert "json_valid" not in generation_scores(["a"], ["plain text"], None)
