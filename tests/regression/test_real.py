"""The packaged MiniLM, really fine-tuned: it must clearly beat the majority class on SST-2.

Marked `real` (about two minutes on 2 CPU cores); `make test` runs it, `pytest -m 'not real'` skips it.
"""

from __future__ import annotations

import pytest

import tunesmith
from conftest import SHARED_DATA

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def sst2_slice(tmp_path_factory):
    train = SHARED_DATA / "sst2" / "train.tsv"
    if not train.exists():
        pytest.skip("../shared/data/sst2 is not beside this checkout")
    lines = train.read_text().splitlines()
    path = tmp_path_factory.mktemp("sst2") / "train2000.tsv"
    path.write_text("\n".join(lines[:2001]) + "\n")  # header + the first 2,000 rows
    return path


def test_minilm_on_2000_sst2_rows_reaches_80_percent(sst2_slice, tmp_path):
    # Seeds 42 / 1 / 7 gave 0.828 / 0.822 / 0.802 here: the seed is fixed, so on CPU the run is exact.
    result = tunesmith.finetune(
        str(sst2_slice),
        "minilm",
        str(tmp_path / "sst2"),
        eval_split=0.0,
        epochs=3,
        batch_size=16,
        lr=1e-4,
        seed=42,
        quiet=True,
    )
    metrics = tunesmith.evaluate(result.path, SHARED_DATA / "sst2" / "dev.tsv")
    print(
        f"SST-2 dev accuracy {metrics['accuracy']:.4f} (macro-F1 {metrics['macro_f1']:.4f}) "
        f"after {result.seconds:.0f}s of fine-tuning on 2,000 rows"
    )
    assert metrics["n"] == 872
    assert metrics["accuracy"] >= 0.80  # the majority class gives 0.51
