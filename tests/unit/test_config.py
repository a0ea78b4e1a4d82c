from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig().with_values({"train.lr": 3e-5, "labels": ["b", "a"], "eval.patience": 2})
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert RunConfig.from_yaml(path) == cfg


def test_set_parses_values_by_field_type():
    cfg = RunConfig().override(
        [
            "train.lr=3e-5",
            "train.epochs=4",
            "data.labels=x,y",
            "eval.every_steps=null",
            "model.name=./folder",
            "quiet=true",
        ]
    )
    assert cfg.train.lr == 3e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 4 and cfg.data.labels == ["x", "y"] and cfg.eval.every_steps is None
    assert cfg.model.name == "./folder" and cfg.quiet is True


def test_bare_names_resolve_to_the_first_section():
    cfg = RunConfig().with_values({"batch_size": 8, "seed": 1, "metric": "accuracy", "eval_data": "t.csv"})
    assert cfg.train.batch_size == 8 and cfg.eval.batch_size == 64
    assert cfg.train.seed == 1 and cfg.eval.metric == "accuracy" and cfg.data.eval_data == "t.csv"


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.lrr=1", "unknown key 'train.lrr'; did you mean 'lr'"),
        ("trian.lr=1", "unknown key 'trian'; did you mean 'train'"),
        ("train=1", "is a section"),
        ("train.epochs=1.5", "expected int, got 1.5"),
        ("train.epochs=0", "train.epochs must be at least 1"),
        ("train.schedule=step", "train.schedule must be linear, cosine or constant"),
        ("data.eval_split=1.5", "data.eval_split must be in [0, 1)"),
        ("eval.metric=auc", "eval.metric must be"),
        ("train.lr", "expected section.field=value"),
    ],
)
def test_bad_overrides_say_what_is_wrong(assignment, message):
    with pytest.raises(ConfigError, match=None) as err:
        RunConfig().override([assignment])
    assert message in str(err.value)


def test_unknown_yaml_key_and_bad_yaml(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'; did you mean 'epochs'"):
        RunConfig.from_yaml(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.from_yaml(tmp_path / "b.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        RunConfig.from_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_load(path):
    assert isinstance(RunConfig.from_yaml(path), RunConfig)


def test_every_field_has_a_docstring():
    import ast
    import inspect

    import tunesmith.config as config

    tree = ast.parse(inspect.getsource(config))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    documented = isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant)
                    assert documented, f"{node.name}.{stmt.target.id} has no docstring"
