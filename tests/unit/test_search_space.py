"""The search space, budgets, per-trial seeding and Pareto fronts of tunesmith tune, without training anything."""

from __future__ import annotations

import math

import pytest

from tunesmith.errors import ConfigError
from tunesmith.search_space import SPACE, config_values, parse_space, sample
from tunesmith.tune import STUDY, ask, pareto, parse_budget

optuna = pytest.importorskip("optuna")  # the tune extra


def test_the_default_space_is_the_table_with_each_strategy_parameter():
    space = parse_space(None)
    assert list(space) == list(SPACE)
    assert space["lr"] == {"low": 1e-5, "high": 1e-3, "log": True}
    assert space["batch_size"] == {"choices": [8, 16, 32]} and space["epochs"] == {"low": 2, "high": 10, "log": False}


def test_a_space_lists_exactly_what_is_searched_and_a_single_value_fixes_it():
    space = parse_space("lr=1e-5:1e-3, batch_size=8|16, strategy=full|lora, epochs=3, warmup_ratio=0.1:0.1")
    assert space == {
        "lr": {"low": 1e-5, "high": 1e-3, "log": True},
        "epochs": {"choices": [3]},
        "batch_size": {"choices": [8, 16]},
        "warmup_ratio": {"choices": [0.1]},
        "strategy": {"choices": ["full", "lora"]},
        "lora_r": {"choices": [4, 8, 16]},  # comes with lora; no l2sp, whose strategy is not in the space
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr=1e-3:1e-5", "low end 0.001 is above the high end 1e-05"),
        ("batch=8", "unknown parameter 'batch' (did you mean batch_size?)"),
        ("epochs=two", "int values expected"),
        ("warmup_ratio=0:1.5", "train.warmup_ratio must be in [0, 1)"),
        ("strategy=full|adapters", "unknown strategy 'adapters'"),
        ("strategy=full:lora", "strategies are choices"),
        ("l2sp=0.01", "applies to strategy l2sp"),
        ("strategy=l2sp,l2sp=0:0.1", "log scale"),
        ("lr=1e-4,lr=1e-3", "write each parameter once"),
    ],
)
def test_bad_spaces_are_one_line_each(text, message):
    with pytest.raises(ConfigError, match="^--space ") as e:
        parse_space(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_l2sp_is_full_with_the_sampled_alpha_and_lora_gets_its_rank():
    assert config_values({"strategy": "l2sp", "l2sp": 0.02, "lr": 1e-4}) == {
        "strategy.name": "full",
        "strategy.l2sp": 0.02,
        "train.lr": 1e-4,
    }
    assert config_values({"strategy": "lora", "lora_r": 4}) == {
        "strategy.name": "lora",
        "strategy.l2sp": 0.0,
        "strategy.lora_r": 4,
    }
    assert config_values({"strategy": "full"}) == {"strategy.name": "full", "strategy.l2sp": 0.0}


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5h", 5400)])
def test_budgets(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["30", "30x", "-5m", "0s", "m"])
def test_bad_budgets(text):
    with pytest.raises(ConfigError, match="--time-budget"):
        parse_budget(text)


def objective(params: dict) -> float:
    """A made-up metric with an optimum near lr 3e-4, batch 16, lora: enough for TPE to have something to model."""
    return -abs(math.log10(params["lr"]) + 3.5) - (params["batch_size"] != 16) * 0.3 + (params["strategy"] == "lora")


def run(tmp_path, name: str, kill_at: int | None) -> list[tuple[dict, float]]:
    """Eight finished trials (past TPE's random start-up); trial kill_at is left as a kill would (then FAIL)."""
    storage = f"sqlite:///{tmp_path / name}.db"
    optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    space = parse_space("lr=1e-5:1e-3,batch_size=8|16|32,strategy=full|lora")
    complete = (optuna.trial.TrialState.COMPLETE,)
    while len(optuna.load_study(study_name=STUDY, storage=storage).get_trials(states=complete)) < 8:
        study, trial, _ = ask(storage, seed=42)
        params = sample(trial, space)
        if trial.number == kill_at:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, objective(params))
    done = optuna.load_study(study_name=STUDY, storage=storage).get_trials(states=complete)
    return [(t.params, t.value) for t in done]


def test_a_trial_that_failed_and_was_asked_again_leaves_the_study_as_if_it_never_had(tmp_path):
    whole, interrupted = run(tmp_path, "whole", None), run(tmp_path, "killed", kill_at=6)
    assert len(whole) == 8 and interrupted == whole
    assert len({round(p["lr"], 12) for p, _ in whole}) == 8  # the seed changes from trial to trial


def test_pareto_front_of_metric_against_time():
    rows = [
        {"number": 0, "state": "COMPLETE", "value": 0.9, "fit_seconds": 10.0},
        {"number": 1, "state": "COMPLETE", "value": 0.8, "fit_seconds": 5.0},
        {"number": 2, "state": "COMPLETE", "value": 0.7, "fit_seconds": 6.0},  # worse and slower than 1
        {"number": 3, "state": "PRUNED", "value": 0.1, "fit_seconds": 1.0},  # no finished result
        {"number": 4, "state": "COMPLETE", "value": 0.9, "fit_seconds": 10.0},  # equal to 0: neither beats it
    ]
    assert pareto(rows, "fit_seconds", maximize=True) == [0, 1, 4]
    assert pareto(rows, "fit_seconds", maximize=False) == [1, 2]  # lower is better: 2 is the lowest, 1 the fastest


def test_tunesmith_tune_is_the_function_even_once_its_module_is_imported():
    import tunesmith.tune  # noqa: F401  (binds nothing new: the package already imported it)

    assert callable(tunesmith.tune) and tunesmith.tune.__module__ == "tunesmith"
