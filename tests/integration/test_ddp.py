"""Two processes (torchrun, gloo on the CPU) give the weights of one process accumulating the same micro-batches
of chunked documents, aggregated by attention: its parameters live outside the encoder's forward, and DDP must
still reduce their gradients with the rest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from accelerate import Accelerator
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForSequenceClassification

    from tunesmith.config import EvalConfig, TrainConfig
    from tunesmith.data.chunks import Documents, DocumentSet
    from tunesmith.losses import classification_loss
    from tunesmith.model.aggregate import attach
    from tunesmith.train.loop import Hooks, fit
    from tunesmith.train.optim import build_optimizer, build_scheduler

    how, grad_accum, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class Fixed(DocumentSet):
        def batches(self, epoch):
            return [[0, 1], [2, 3], [4], [5], [6, 7], [1, 5]]

    class Quiet:
        def advance(self, step, total): pass
        def log(self, record): pass

    accelerator = Accelerator()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config)
    combine = attach(model, how, 3)
    if combine.attention is not None:
        torch.nn.init.normal_(combine.attention.score[2].weight)
    gen = torch.Generator().manual_seed(1)
    counts = [1, 3, 2, 1, 2, 3, 1, 2]
    owner = [d for d, n in enumerate(counts) for _ in range(n)]
    sizes = torch.randint(3, 12, (len(owner),), generator=gen)
    ids = [torch.randint(1, 60, (int(n),), generator=gen).tolist() for n in sizes]
    labels = torch.randint(0, 3, (len(counts),), generator=gen).tolist()
    data = Fixed(Documents(ids, None, owner, len(counts)), labels, 4, 1, 0, 0, combine)
    cfg = TrainConfig(epochs=1, grad_accum=grad_accum, lr=1e-2, warmup_ratio=0.0, schedule="constant",
                      max_grad_norm=0.5, log_every=1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 3)
    model, opt = accelerator.prepare(model, opt)
    fit(model, classification_loss, data, opt, sched, accelerator, cfg, EvalConfig(), Hooks(Quiet()))
    if accelerator.is_main_process:
        print("processes", accelerator.num_processes, flush=True)
        state = accelerator.unwrap_model(model).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, out)
""")


def test_two_processes_equal_one_accumulating_the_same_chunked_documents(tmp_path):
    how = "attention"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    # One process: every micro-batch, two per step. Two: each takes every other one, one per step.
    done = subprocess.run([sys.executable, str(script), how, "2", str(one)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # Without a GPU, accelerate distributes over CPU processes only when asked (ACCELERATE_USE_CPU).
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", str(script), how, "1",
                           str(two)], capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes 2" in done.stdout, "two processes, not two single-process runs"
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys() and (how != "attention" or any(k.startswith("chunk_attention") for k in a))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key
