"""Generative fine-tuning on a random-init tiny Llama: loss normalisation, packing, the run folder, predict, chat."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_pairs, write_rows
from tunesmith.config import EvalConfig, TrainConfig
from tunesmith.data.chat import IGNORE, ChatFormat
from tunesmith.data.tokens import PackedSet, TokenSet
from tunesmith.losses import causal_lm_loss
from tunesmith.train.loop import Hooks, fit
from tunesmith.train.optim import build_scheduler


@pytest.fixture(scope="module")
def samples(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    fmt = ChatFormat(tok, "chat")
    return [
        fmt.encode([{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}], 512)
        for r in make_pairs(12, seed=3)
    ]


def load(tiny_llama):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.config.use_cache = False
    return model


class Fixed:
    """The same micro-batches every epoch, over a TokenSet, so only accumulation differs."""

    def __init__(self, data: TokenSet, batches):
        self.data, self._batches = data, batches

    def batches(self, epoch):
        return self._batches

    def collate(self, rows):
        return self.data.collate(rows)

    def items(self, rows):
        return self.data.items(rows)


class NoReport:
    def advance(self, step, total):
        pass

    def log(self, record):
        pass


def one_step(tiny_llama, samples, batches, grad_accum):
    model = load(tiny_llama)
    cfg = TrainConfig(epochs=1, grad_accum=grad_accum, lr=1e-2, warmup_ratio=0.0, schedule="constant", log_every=1)
    # SGD: the update is the (clipped) gradient itself; Adam's first step, ~sign(g), would amplify float noise
    # in near-zero gradient entries into differences of 2·lr.
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    data = Fixed(TokenSet(samples, 4, 1, 0, 2, keep_logits=True), batches)
    fit(
        model,
        causal_lm_loss,
        data,
        opt,
        build_scheduler(opt, cfg, 1),
        Accelerator(),
        cfg,
        EvalConfig(),
        Hooks(NoReport()),
    )
    return model.state_dict()


@pytest.mark.parametrize("keep_logits", [False, True])
def test_step_loss_is_the_mean_over_target_tokens_as_transformers_computes_it(tiny_llama, samples, keep_logits):
    model = load(tiny_llama)
    data = TokenSet(samples, 12, 1, 0, 2, keep_logits)
    rows = list(range(12))
    batch = data.collate(rows)
    labels = batch.pop("labels")
    unshifted = torch.full_like(batch["input_ids"], IGNORE)  # what transformers takes: it shifts them itself
    for r, s in enumerate(samples):
        unshifted[r, : len(s.labels)] = torch.tensor(s.labels)
    with torch.no_grad():
        ours = causal_lm_loss(model(**batch).logits, labels) / data.items(rows)
        theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=unshifted).loss
    assert torch.allclose(ours, theirs, atol=1e-6)
    if keep_logits:  # only positions that predict a reply token reach the LM head
        assert len(batch["logits_to_keep"]) < batch["input_ids"].shape[1] / 2


def test_accumulation_never_changes_the_update(tiny_llama, samples):
    whole = one_step(tiny_llama, samples, [list(range(12))], 1)
    halves = one_step(tiny_llama, samples, [list(range(6)), list(range(6, 12))], 2)
    uneven = one_step(tiny_llama, samples, [list(range(9)), [9, 10], [11]], 3)
    start = load(tiny_llama).state_dict()
    for key in whole:
        assert torch.allclose(whole[key], halves[key], atol=1e-6), key
        assert torch.allclose(whole[key], uneven[key], atol=1e-6), key
    assert not torch.equal(whole["model.embed_tokens.weight"], start["model.embed_tokens.weight"])


@pytest.mark.parametrize("keep_logits", [False, True])
def test_packed_loss_equals_unpacked(tiny_llama, samples, keep_logits):
    model = load(tiny_llama).eval()
    padded, packed = TokenSet(samples, 12, 1, 0, 2), PackedSet(samples, 12, 200, 0, 2, keep_logits)
    rows = packed.batches(0)[0]
    assert rows.count(-1) < len(samples), "several samples share a row"
    with torch.no_grad():
        a = padded.collate(list(range(12)))
        b = packed.collate(rows)
        la, lb = a.pop("labels"), b.pop("labels")
        unpacked_loss = causal_lm_loss(model(**a).logits, la)
        packed_loss = causal_lm_loss(model(**b).logits, lb)
    assert padded.items(list(range(12))) == packed.items(rows)
    assert torch.allclose(unpacked_loss, packed_loss, rtol=1e-5), (unpacked_loss, packed_loss)


def test_a_packed_token_never_sees_its_neighbour(tiny_llama, samples):
    model = load(tiny_llama).eval()
    first, second = samples[0], samples[1]
    changed = type(first)([t + 7 for t in first.ids], first.labels)
    logits = []
    for neighbour in (first, changed):
        data = PackedSet([neighbour, second], 1, 512, 0, 2)
        batch = data.collate([0, 1, -1])
        batch.pop("labels")
        with torch.no_grad():
            logits.append(model(**batch).logits[0, len(first.ids) : len(first.ids) + len(second.ids)])
    assert torch.allclose(logits[0], logits[1], atol=1e-5), "attention crossed a sample boundary"
    # Control: without the position reset (one long sequence) the neighbour does change them.
    ids = torch.tensor([[*first.ids, *second.ids]]), torch.tensor([[*changed.ids, *second.ids]])
    with torch.no_grad():
        joined = [model(input_ids=x).logits[0, len(first.ids) :] for x in ids]
    assert not torch.allclose(joined[0], joined[1], atol=1e-5)


@pytest.fixture(scope="module")
def gen_run(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    train = write_rows(folder / "train.jsonl", make_pairs(160, seed=1))
    test = write_rows(folder / "test.jsonl", make_pairs(20, seed=2))
    from tunesmith import finetune

    result = finetune(
        str(train),
        model=tiny_llama,
        output=str(folder / "run"),
        epochs=4,
        lr=1e-2,
        batch_size=4,
        eval_data=str(test),
        packing=True,
        quiet=True,
        max_new_tokens=10,
        max_length=128,
    )
    return {"folder": folder, "result": result, "test": test}


def test_training_learns_the_replies_and_reports_before_and_after(gen_run):
    metrics = gen_run["result"].metrics
    assert metrics["loss"] < metrics["before"]["loss"] - 1.0
    # A 2-layer model with hidden size 32 learns the reply's form in a few seconds (which class, barely):
    # every reply must be one well-formed line that stopped at EOS, where θ̂ produced none.
    assert metrics["rouge_l"] >= 0.6 > metrics["before"]["rouge_l"], metrics["examples"]
    assert all(re.fullmatch(r"Category: \w+\.", e["generated"]) for e in metrics["examples"]), metrics["examples"]
    record = json.loads((gen_run["result"].path / "tunesmith.json").read_text())
    assert record["task"] == "generate" and record["template"] == "chat" and record["config"]["train"]["packing"]
    assert json.loads((gen_run["result"].path / "eval.json").read_text())["before"]["n"] == 20


def test_run_folder_is_a_plain_transformers_model_that_stops_at_eos(gen_run):
    run = gen_run["result"].path
    config = json.loads((run / "config.json").read_text())
    assert "quantization_config" not in config and config["use_cache"] is True
    script = (
        "import sys; sys.modules['gguf'] = None\n"  # loading must not need the gguf package
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(run)!r}); t = AutoTokenizer.from_pretrained({str(run)!r})\n"
        "ids = t.apply_chat_template([{'role': 'user', 'content': 'my invoice was charged twice'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "out = m.generate(**ids, max_new_tokens=30, do_sample=False)[0, ids['input_ids'].shape[1]:]\n"
        "print(repr(t.decode(out)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = eval(done.stdout.strip().splitlines()[-1])
    assert re.fullmatch(r"Category: \w+\.<\|im_end\|>", text), text  # it learned to stop


def test_predict_and_chat_from_the_cli(gen_run, cli, tmp_path):
    prompts = write_rows(tmp_path / "prompts.jsonl", [{"prompt": r["prompt"]} for r in make_pairs(9, seed=5)])
    out = tmp_path / "out.jsonl"
    code, _, err = cli("predict", gen_run["result"].path, prompts, "-o", out, "--max-new-tokens", "10")
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    sent = [json.loads(x)["prompt"] for x in prompts.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == sent, "output in input order"
    assert all(re.fullmatch(r"Category: \w+\.", r["response"]) for r in rows), rows
    code, stdout, err = cli("evaluate", gen_run["result"].path, gen_run["test"], "--max-new-tokens", "10")
    assert code == 0, err
    assert "perplexity" in stdout and "(20 generated)" in stdout
    code, stdout, err = cli("chat", gen_run["result"].path, "--max-new-tokens", "10", stdin="my invoice\n/quit\n")
    assert code == 0, err
    assert "Category:" in stdout


def test_lora_is_merged_on_save(tiny_llama, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", make_pairs(40, seed=1))
    from tunesmith import finetune

    result = finetune(
        str(train),
        model=tiny_llama,
        output=str(tmp_path / "run"),
        epochs=1,
        batch_size=8,
        strategy="lora",
        lr=1e-2,
        quiet=True,
        generate_samples=0,
        lora_dropout=0.0,
    )
    model = AutoModelForCausalLM.from_pretrained(result.path)
    assert not any("lora" in n for n, _ in model.named_parameters())
    drift = json.loads((result.path / "drift.json").read_text())
    assert drift["groups"]["embeddings"]["relative"] == 0.0, "LoRA leaves the embeddings alone"
    assert drift["totals"]["blocks"]["relative"] > 0


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_gradient_checkpointing_recomputes_and_changes_no_weight(tiny_llama, tmp_path, monkeypatch, strategy):
    import transformers.modeling_utils as modeling_utils
    from safetensors.torch import load_file

    from tunesmith import finetune

    train = write_rows(tmp_path / "train.jsonl", make_pairs(40, seed=1))
    calls = []
    real = modeling_utils.checkpoint  # what gradient_checkpointing_enable wraps the layers' forwards in

    def counted(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counted)
    weights = {}
    for checkpointing in (False, True):
        result = finetune(
            str(train), model=tiny_llama, output=str(tmp_path / f"run-{checkpointing}"), epochs=1, batch_size=8,
            strategy=strategy, lr=1e-2, quiet=True, generate_samples=0, gradient_checkpointing=checkpointing,
        )  # fmt: skip
        weights[checkpointing] = load_file(result.path / "model.safetensors")
        recorded = json.loads((result.path / "tunesmith.json").read_text())["config"]["train"]
        assert recorded["gradient_checkpointing"] is checkpointing
    assert calls and set(calls) == {False}, "the layers ran under non-reentrant checkpointing, and only when asked"
    for name, tensor in weights[False].items():
        assert torch.allclose(weights[True][name], tensor, atol=1e-6), name  # the same gradients, recomputed


def test_generation_data_errors_name_row_and_column(tiny_llama, tmp_path, cli):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "robot", "content": "hi"}]})
        + "\n"
    )
    code, _, err = cli("train", bad, "--model", tiny_llama, "-o", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1
    assert "bad.jsonl" in err and "row 2" in err and "messages" in err and "unknown role 'robot'" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.partial").exists()
    head = tmp_path / "head.jsonl"
    write_rows(head, make_pairs(20))
    code, _, err = cli("train", head, "--model", tiny_llama, "--strategy", "head", "-o", tmp_path / "h")
    assert code == 2 and "no parameter of this model trains" in err
