from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_recall_fscore_support

from tunesmith.data.labels import LabelSpace
from tunesmith.metrics import ClassificationScore


@pytest.mark.parametrize("seed", range(5))
def test_confusion_matrix_scores_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = 4
    gold = rng.integers(0, k - 1, 300)  # the last class never occurs: zero support
    logits = torch.as_tensor(rng.normal(size=(300, k)), dtype=torch.float32)
    logits[:, 1] -= 10  # class 1 is (almost) never predicted: zero precision denominator
    score = ClassificationScore(LabelSpace(tuple("abcd")))
    for start in range(0, 300, 64):
        score.add(logits[start : start + 64], torch.as_tensor(gold[start : start + 64]))
    got = score.result()
    pred = logits.argmax(-1).numpy()
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=range(k), zero_division=0)
    for i, name in enumerate("abcd"):
        assert got["per_class"][name] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert got["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=range(k), average="macro", zero_division=0))
    assert got["weighted_f1"] == pytest.approx(
        f1_score(gold, pred, labels=range(k), average="weighted", zero_division=0)
    )
    assert got["accuracy"] == pytest.approx((gold == pred).mean())
    loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(gold)).item()
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert np.array(got["confusion_matrix"]).sum() == got["n"] == 300
