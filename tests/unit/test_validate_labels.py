from __future__ import annotations

from collections import Counter

import pytest

from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import Table
from tunesmith.data.validate import examples, stratified_split
from tunesmith.errors import DataError


def table(texts, labels, lines=None):
    return Table("f.csv", {"text": list(texts), "label": list(labels)}, lines)


def test_labels_become_strings():
    ex = examples(table(["a", "b", "c", "d"], [1, 2.0, " x ", True]), None, None)
    assert ex.labels == ["1", "2", "x", "true"]


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [
        (["a", " "], ["x", "y"], "f.csv, line 3 (row 2), column 'text': empty text"),
        (["a", None], ["x", "y"], "empty text"),
        (["a", {"k": 1}], ["x", "y"], "expected text, got dict"),
        (["a", "b"], ["x", float("nan")], "column 'label': missing label"),
        (["a", "b"], ["x", ["y", "z"]], "expected one label, got list"),
        (["a", "b"], ["x", float("inf")], "is not a class"),
    ],
)
def test_bad_rows(texts, labels, message):
    with pytest.raises(DataError) as err:
        examples(table(texts, labels, [2, 3]), None, None)
    assert message in str(err.value)


def test_label_order_is_sorted_numeric_or_given():
    assert LabelSpace.from_labels(["b", "a", "c", "a"]).names == ("a", "b", "c")
    assert LabelSpace.from_labels(["10", "2", "1"]).names == ("1", "2", "10")
    assert LabelSpace.from_labels(["b", "a"], given=["b", "a", "c"]).names == ("b", "a", "c")
    space = LabelSpace.from_labels(["neg", "pos"])
    assert space.id2label == {0: "neg", 1: "pos"} and space.label2id == {"neg": 0, "pos": 1}
    assert LabelSpace.from_dict(space.to_dict()) == space


def test_label_space_errors():
    with pytest.raises(DataError, match="found 1 class .*at least two"):
        LabelSpace.from_labels(["a", "a"], file="f.csv")
    with pytest.raises(DataError, match="row 3: label 'c' is not in --labels"):
        LabelSpace.from_labels(["a", "b", "c"], given=["a", "b"], file="f.csv")


def test_unseen_label_names_its_row():
    ex = examples(table(["a", "b", "c"], ["x", "y", "z"], [2, 3, 5]), None, None)
    with pytest.raises(DataError) as err:
        ex.label_ids(LabelSpace(("x", "y")))
    assert "line 5 (row 3), column 'label': label 'z' was never seen in training" in str(err.value)


def test_stratified_split_is_seeded_disjoint_and_keeps_rare_classes_in_training():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 1
    train, held = stratified_split(labels, 0.2, seed=3)
    assert sorted(train + held) == list(range(81))
    assert Counter(labels[i] for i in held) == {"a": 10, "b": 6}
    assert 80 in train, "a class with one row stays in training"
    assert stratified_split(labels, 0.2, seed=3) == (train, held)
    assert stratified_split(labels, 0.2, seed=4) != (train, held)
