"""`tunesmith tune`: an optuna study over run configs; each trial is an ordinary run, in this process.

Owns the study (SQLite in the output folder: create, resume, seed, prune), the trial loop, parallel workers,
best/ and the reports (tune.json, tune.md, Pareto fronts). What is searched is search_space.py's. Knows
nothing about training beyond `tunesmith.train.run.run` and the files a run folder holds. optuna, torch and
the run machinery are imported inside functions, since `import tunesmith` imports this module.

`tunesmith.tune` is the function (the package binds it over this module's name): import from this module
with `from tunesmith.tune import ...`, which goes through sys.modules.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.search_space import config_values, parse_space, sample

STUDY, STUDY_FILE, TRIALS, BEST = "tunesmith", "study.db", "trials", "best"
STARTUP_TRIALS = 5
"""TPE samples at random until this many trials finished. optuna's default is 10, but a trial here costs
minutes: studies have tens of trials, and 10 random ones would spend a third of a 30-trial study."""


@dataclass
class TuneResult:
    """What a study produced: the best trial (copied to path/best) and every trial's row, as tune.json has them."""

    path: Path
    metric: str
    direction: str
    best: dict[str, Any] | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    pareto: dict[str, list[int]] = field(default_factory=dict)


def parse_budget(text: str | None) -> float | None:
    """Seconds in a budget such as 90s, 30m or 2h; a unit is required, since minutes and seconds both occur."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh])\s*", str(text))
    if not found or float(found[1]) <= 0:
        raise ConfigError(f"--time-budget {text!r}: write a positive number and a unit: 90s, 30m or 2h")
    return float(found[1]) * {"s": 1, "m": 60, "h": 3600}[found[2]]


def trial_seed(seed: int, finished: int, lane: int = 0) -> int:
    """The sampler's seed for the next trial: a function of (train.seed, finished trials), so a resumed study
    asks what an uninterrupted one would have (a FAIL trial, which TPE ignores, does not count). lane keeps
    parallel workers that see the same count from asking the same thing.
    """
    return (seed * 1_000_003 + finished * 7_919 + lane) % 2**32


def pruner() -> Any:
    """PercentilePruner at the 25th percentile, fed each trial's n-th evaluation (one per epoch unless
    eval.every_steps), compared with finished trials' n-th.

    Not the median: epochs is searched, and at its first evaluations a 10-epoch trial still runs near its peak
    rate while a 2-epoch one has decayed, so the long trial can be behind there for no fault of its own;
    pruning the worse half would cut such trials often, the worst quarter cuts the hopeless. Not Hyperband
    either: it allocates epochs itself, and here the sampler chooses them. It waits for 3 complete trials,
    as a percentile of fewer says little.
    """
    import optuna

    return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=0, n_min_trials=3)


def ask(storage: Any, seed: int, lane: int = 0) -> tuple[Any, Any, int]:
    """(study, new trial, finished trials) with TPE seeded afresh for this trial (see trial_seed)."""
    import optuna

    finished = len(_trials(optuna.load_study(study_name=STUDY, storage=storage), "COMPLETE", "PRUNED"))
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate, optuna 4
    sampler = optuna.samplers.TPESampler(
        seed=trial_seed(seed, finished, lane), n_startup_trials=STARTUP_TRIALS, multivariate=True
    )
    study = optuna.load_study(study_name=STUDY, storage=storage, sampler=sampler, pruner=pruner())
    return study, study.ask(), finished


def _trials(study: Any, *states: str) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in states))


def storage_of(output: Path) -> Any:
    """The study's SQLite storage; a 60 s lock timeout lets parallel workers queue for the file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the line per trial comes from _say, not from optuna
    url = f"sqlite:///{(output / STUDY_FILE).resolve()}"
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def run_study(
    base: RunConfig,
    output: Path,
    space: str | None = None,
    trials: int | None = None,
    time_budget: str | None = None,
    keep: str = "best",
    jobs: int = 1,
    resume: bool = False,
    overwrite: bool = False,
) -> TuneResult:
    """Run (or continue) the study in output: up to `trials` finished trials (counting earlier ones when
    resuming) and no new trial after `time_budget`; then best/, tune.json and tune.md.

    Everything that can be refused is refused before the first trial: the space, the budget, the held-out
    data, the data itself, the folder, and a study of other data, task or metric.
    """
    if find_spec("optuna") is None:
        raise ConfigError("tunesmith tune needs optuna: pip install 'tunesmith[tune]'")
    budget, searched = parse_budget(time_budget), parse_space(space) if space is not None else None
    if trials is None and budget is None:
        raise ConfigError("tune: pass --trials N, --time-budget (e.g. 30m), or both")
    if resume and overwrite:
        raise ConfigError("tune: --resume continues the study and --overwrite replaces it; pass one of them")
    if trials is not None and trials < 1 or keep not in ("best", "all"):
        raise ConfigError(f"tune: --trials must be at least 1 and --keep best or all, got {trials} and {keep!r}")
    devices = _devices(jobs)
    base = _checked(base)
    study = _open(base, output, searched, resume, overwrite)
    deadline = None if budget is None else time.time() + budget
    failed = _spawn(output, devices, deadline, trials, keep) if devices else work(output, deadline, trials, keep)
    result = _sync(study, output, keep, publish=True)
    if failed:
        raise TunesmithError(
            f"tune: {len(failed)} of {len(devices)} workers failed (exit {failed}); see above, then --resume"
        )
    if result.best is None:
        what = f"--time-budget {time_budget} is too small for one trial" if budget else "no trial completed"
        raise ConfigError(f"{what}; {output} can continue: run this tune again with --resume and a larger budget")
    return result


def _checked(base: RunConfig) -> RunConfig:
    """The task resolved, held-out data required, every data error raised now (one line) rather than per trial."""
    from tunesmith.tasks import resolve

    base, task = resolve(base)
    if base.data.eval_data is None and base.data.eval_split == 0:
        raise ConfigError("tune: trials are compared on held-out data; pass --eval-data or an --eval-split above 0")
    task.load_data(base)
    return base


def _fingerprint(base: RunConfig) -> dict[str, Any]:
    """What must match for two trials' metric values to compare: data bytes, held-out split, task, metric."""
    from tunesmith.data.validate import sha256_of

    data = {"train": sha256_of(base.data.train_data), "eval": base.data.eval_data and sha256_of(base.data.eval_data)}
    if not data["eval"]:
        data["eval_split"] = base.data.eval_split
    return {"task": base.task.type, "metric": base.eval.metric, "data": data}


def _open(base: RunConfig, output: Path, space: dict | None, resume: bool, overwrite: bool) -> Any:
    """Create the study, or load it to resume: its fingerprint must match; trials a kill left RUNNING become
    FAIL (their folders removed), so the next ask re-asks what they were.
    """
    import optuna

    db, found = output / STUDY_FILE, _fingerprint(base)
    if resume and not db.is_file():
        raise ConfigError(f"{output}: nothing to resume (no {STUDY_FILE}); drop --resume to start a study")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: exists and is not a folder")
    if not resume and output.exists() and any(output.iterdir()):
        if not overwrite:
            raise ConfigError(f"{output}: already exists; pass --resume to continue its study or --overwrite")
        for name in (STUDY_FILE, TRIALS, BEST, "tune.json", "tune.md", f".{BEST}.tmp"):
            path = output / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    if not resume:
        direction = "maximize" if base.eval.better(1.0, 0.0) else "minimize"
        study = optuna.create_study(storage=storage_of(output), study_name=STUDY, direction=direction)
        for key, value in {**found, "space": space or parse_space(None)}.items():
            study.set_user_attr(key, value)
    else:
        study = optuna.load_study(study_name=STUDY, storage=storage_of(output))
        for key in ("task", "metric", "data"):
            old = study.user_attrs.get(key)
            if old != found[key]:
                what = "other data (by sha256)" if key == "data" else f"{key} {old}, not {found[key]}"
                raise ConfigError(f"{db}: a study of {what}; use another --output")
        if space is not None and space != study.user_attrs["space"]:
            raise ConfigError(f"{db}: the study searches another --space; resume with the same one, or none")
        for trial in _trials(study, "RUNNING"):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            _remove(_folder(output, trial.number))
    study.set_user_attr("config", base.to_dict())  # what workers, and a resumed study, train with
    for left in [output / f".{BEST}.tmp", *output.glob(f".{BEST}.old-*")]:  # what a kill left of a best/ swap
        shutil.rmtree(left, ignore_errors=True)
    return study


def work(
    output: Path, deadline: float | None, trials: int | None, keep: str, lane: int = 0, publish: bool = True
) -> list[int]:
    """Ask, train and tell trials until `trials` are finished or asked, or the deadline passes: the loop of
    every process working on this study (the only one with --jobs 1; each worker, lane 0..N-1, with more).
    Workers leave best/ and the reports to the process that started them: two renaming best/ at once collide.
    """
    import optuna

    storage = storage_of(output)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    base, space = RunConfig.from_dict(study.user_attrs["config"]), study.user_attrs["space"]
    while deadline is None or time.time() < deadline:
        if trials is not None and len(_trials(study, "COMPLETE", "PRUNED", "RUNNING")) >= trials:
            break
        if not _run_trial(storage, base, space, output, deadline, lane):
            break
        _sync(study, output, keep, publish)
    return []


def _run_trial(storage: Any, base: RunConfig, space: dict, output: Path, deadline: float | None, lane: int) -> bool:
    """One trial, told to the study as COMPLETE, PRUNED (by the pruner, or diverged: a result TPE should learn
    from) or FAIL (stopped by the user, or by a budget too small for it: asked again on resume). False: stop.
    """
    import optuna

    from tunesmith.compare import mean_backbone_drift
    from tunesmith.errors import Interrupted, NonFiniteError
    from tunesmith.train.run import run

    study, trial, finished = ask(storage, base.train.seed, lane)
    params = sample(trial, space)
    trial.set_user_attr("params", params)
    folder, fail = _folder(output, trial.number), optuna.trial.TrialState.FAIL
    values = {**config_values(params), "output": str(folder), "quiet": True, "resume": False, "overwrite": True}
    if deadline is not None:
        minutes = (deadline - time.time()) / 60
        if minutes <= 0:
            study.tell(trial, state=fail)
            return False
        values["train.max_minutes"] = min(minutes, base.train.max_minutes or math.inf)
    seen: dict[str, Any] = {"seconds": 0.0, "scheduled": False}
    try:
        result = run(base.with_values(values, where="tune"), on_evaluation=_on_evaluation(trial, base, seen))
    except (optuna.TrialPruned, NonFiniteError) as e:
        _attrs(trial, {"fit_seconds": round(seen["seconds"], 2), "stopped": str(e) or "pruned"})
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        _say(base, trial.number, "PRUNED", seen.get("value"), params)
        return True
    except BaseException as e:  # FAIL: asked again on resume, so nothing of this attempt is kept
        study.tell(trial, state=fail)
        _remove(folder)
        if isinstance(e, Interrupted):  # the run's own message offers to resume the trial's folder, now gone
            e.args = (f"stopped by a signal in trial {trial.number}; to continue, run this tune again with --resume",)
        raise
    if not seen["scheduled"] and finished == 0:  # the budget cut the first trial before its first evaluation
        study.tell(trial, state=fail)
        _remove(folder)
        return False
    info = json.loads((result.path / "tunesmith.json").read_text())
    drift = json.loads((result.path / "drift.json").read_text())
    _attrs(trial, {"fit_seconds": info["fit_seconds"], "drift": mean_backbone_drift(drift)})
    _attrs(trial, {"stopped": info.get("stop_reason")})
    study.tell(trial, result.best["value"])
    _say(base, trial.number, "COMPLETE", result.best["value"], params)
    return True


def _on_evaluation(trial: Any, base: RunConfig, seen: dict[str, Any]) -> Any:
    """The run's on_evaluation: report the n-th scheduled evaluation to the pruner and stop when it says so.

    An evaluation forced by train.max_minutes mid-epoch is kept by the run but not reported: it would be
    compared with other trials' full epochs.
    """
    import optuna

    every = base.eval.every_steps

    def on_evaluation(state: Any, metrics: dict[str, Any]) -> None:
        seen["seconds"], seen["value"] = state.seconds, metrics[base.eval.metric]
        if state.group != 0 and not (every and state.step % every == 0):
            return
        seen["scheduled"] = True
        trial.report(float(metrics[base.eval.metric]), state.evaluations)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {state.evaluations} (step {state.step})")

    return on_evaluation


def _attrs(trial: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        trial.set_user_attr(key, value)


def _say(base: RunConfig, number: int, state: str, value: float | None, params: dict[str, Any]) -> None:
    if not base.quiet:
        shown = "-" if value is None else f"{value:.4f}"
        print(f"trial {number} {state}: {base.eval.metric} {shown}; {_params(params)}", file=sys.stderr, flush=True)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _folder(output: Path, number: int) -> Path:
    return output / TRIALS / f"trial-{number:04d}"


def _remove(folder: Path) -> None:
    from tunesmith.runs import partial_of

    for path in (folder, partial_of(folder)):
        shutil.rmtree(path, ignore_errors=True)


def _sync(study: Any, output: Path, keep: str, publish: bool) -> TuneResult:
    """Bring the folder in line with the study: with keep best, only the best trial keeps its folder; best/ is
    a copy of it (copied to a hidden sibling, then renamed: never half-written); tune.json and tune.md list
    every trial. Idempotent, so a resumed study repairs whatever a kill interrupted here.
    """
    from tunesmith.runs import atomic_path, finish, write_json

    space = study.user_attrs["space"]
    maximize = study.direction.name == "MAXIMIZE"
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    best = _best(rows, maximize)
    if keep == "best":
        for r in rows:
            if r["number"] != (best or {}).get("number") and r["state"] != "RUNNING":
                _remove(_folder(output, r["number"]))
    fronts = {"fit_seconds": pareto(rows, "fit_seconds", maximize)}
    if len(space.get("strategy", {}).get("choices", [])) > 1:
        fronts["mean_backbone_drift"] = pareto(rows, "mean_backbone_drift", maximize)
    source = best and _folder(output, best["number"])
    if publish and source and source.is_dir() and _held(output) != best["number"]:
        staging = output / f".{BEST}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        finish(staging, output / BEST)
    if best:
        best = {**best, "path": str(output / BEST) if _held(output) == best["number"] else None}
    result = TuneResult(output, study.user_attrs["metric"], study.direction.name.lower(), best, rows, fronts)
    if publish:
        with atomic_path(output / "tune.json") as tmp:
            write_json(tmp, {**result.__dict__, "path": str(output), "space": space})
        with atomic_path(output / "tune.md") as tmp:
            tmp.write_text(markdown(result) + "\n")
    return result


def _row(trial: Any) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": attrs.get("params", trial.params),
        "value": trial.value if trial.state.name != "FAIL" else None,
        "fit_seconds": attrs.get("fit_seconds"),
        "mean_backbone_drift": attrs.get("drift"),
        "stopped": attrs.get("stopped"),
    }


def _best(rows: list[dict[str, Any]], maximize: bool) -> dict[str, Any] | None:
    """The best complete trial; a tie goes to the earlier one, so a resumed study picks what an uninterrupted
    one picks (optuna's best_trial leaves ties to the database's row order).
    """
    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    return min(done, key=lambda r: (-r["value"] if maximize else r["value"], r["number"]), default=None)


def _held(output: Path) -> int | None:
    """The trial best/ is a copy of, from the output its tunesmith.json records."""
    file = output / BEST / "tunesmith.json"
    if not file.is_file():
        return None
    name = Path(json.loads(file.read_text())["config"]["output"]).name
    return int(name.removeprefix("trial-")) if name.startswith("trial-") else None


def pareto(rows: list[dict[str, Any]], key: str, maximize: bool) -> list[int]:
    """Numbers of the complete trials that no other beats on both the metric and `key` (lower is better)."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None and r.get(key) is not None]

    def beats(a: dict[str, Any], b: dict[str, Any]) -> bool:
        at_least = (a["value"] >= b["value"] if maximize else a["value"] <= b["value"]) and a[key] <= b[key]
        return at_least and (a["value"], a[key]) != (b["value"], b[key])

    return [r["number"] for r in done if not any(beats(o, r) for o in done)]


def markdown(result: TuneResult) -> str:
    """Every trial as a Markdown table, then the best trial and the Pareto fronts."""
    head = ["trial", "state", result.metric, "fit s", "mean backbone drift", "parameters"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.trials:
        numbers = [_num(r["value"], ".4f"), _num(r["fit_seconds"], ".1f"), _num(r["mean_backbone_drift"], ".4f")]
        lines.append(f"| {r['number']} | {r['state']} | " + " | ".join(numbers) + f" | {_params(r['params'])} |")
    if result.best:
        where = f" in {result.best['path']}" if result.best["path"] else ""
        lines += ["", f"best: trial {result.best['number']}, {result.metric} {result.best['value']:.4f}{where}"]
    names = {"fit_seconds": "fit seconds", "mean_backbone_drift": "mean backbone drift"}
    for key, front in result.pareto.items():
        lines.append(
            f"Pareto front of {result.metric} against {names[key]}: trials {', '.join(map(str, front)) or '-'}"
        )
    return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _devices(jobs: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each worker for --jobs N > 1 (one GPU each); [] for --jobs 1, trials in-process.

    More jobs than GPUs is refused rather than shared: on a CPU one trial already keeps every core busy, and two
    trials on one GPU would each report a slower fit time than the study's other trials.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if jobs == 1:
        return []
    import torch

    count = torch.cuda.device_count()
    if count < jobs:
        raise ConfigError(
            f"--jobs {jobs}: each parallel trial needs its own GPU and this machine has {count or 'none'}"
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    return ids[:jobs]


def _spawn(output: Path, devices: list[str], deadline: float | None, trials: int | None, keep: str) -> list[int]:
    """Run a worker process (`tunesmith tune-worker`) per device on the same study; their failing exit codes."""
    command = [sys.executable, "-m", "tunesmith", "tune-worker", str(output), "--keep", keep]
    command += ["--trials", str(trials)] if trials is not None else []
    command += ["--deadline", repr(deadline)] if deadline is not None else []
    workers = [
        subprocess.Popen([*command, "--lane", str(lane)], env={**os.environ, "CUDA_VISIBLE_DEVICES": device})
        for lane, device in enumerate(devices)
    ]
    return [code for code in (w.wait() for w in workers) if code]
