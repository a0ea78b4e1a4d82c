"""Write TREC (Li & Roth) from ../shared/data/trec as CSV with its coarse labels, for train / compare.

Each line of the original is `COARSE:fine question tokens`; train_5500.label is not valid UTF-8
(as distributed), so it is read as latin-1.

    .venv/bin/python bench/trec_csv.py OUT_DIR     # writes OUT_DIR/train.csv (5,452) and OUT_DIR/test.csv (500)
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

TREC = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec"


def convert(source: Path, target: Path) -> int:
    rows = []
    for line in source.read_bytes().decode("latin-1").splitlines():
        if line.strip():
            label, question = line.split(" ", 1)
            rows.append((question.strip(), label.split(":", 1)[0]))
    with target.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return len(rows)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    print(
        convert(TREC / "train_5500.label", out / "train.csv"),
        "train rows;",
        convert(TREC / "TREC_10.label", out / "test.csv"),
        "test rows",
    )
