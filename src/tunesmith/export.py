"""ONNX export of a sequence-task run (a classifier and its siblings) for fast CPU inference.

Owns what goes into RUN/onnx/: model.onnx (fp32), its int8 versions (model.int8.onnx, model.int8-dynamic.onnx)
and export.json (what was exported, and how far each file's logits are from torch's). Knows nothing about
training; backends.py runs these files through the same Forward interface as torch.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.backends import FILES, ONNX_DIR, QUANTIZED, require_onnx, session_forward
from tunesmith.data.batching import collate
from tunesmith.data.encode import encode_texts
from tunesmith.errors import ConfigError, ModelError
from tunesmith.model.heads import load_finetuned
from tunesmith.model.pretrained import load_tokenizer, local, quiet_transformers
from tunesmith.runs import atomic_path

QUANTIZE = {
    "int8": {"method": "MatMulNBits", "bits": 8, "block_size": 64, "is_symmetric": True, "accuracy_level": 4},
    "int8-dynamic": {"method": "quantize_dynamic", "weight_type": "QInt8", "per_channel": True, "reduce_range": True},
}
"""The two int8 files export --quantize writes, each run by backend onnx-<name>. Measured by `make bench` on
a MiniLM SST-2 run, as the share of predictions equal to torch's (872 dev texts; 10,000 unseen ones) and the
speed against the fp32 file:
- int8: int8 weights with one scale per 64 inputs of each output, and the activations quantised to int8 per
  64 values of each token at run time (accuracy_level 4: ONNX Runtime's int8 kernels). 99.5% and 99.6%,
  1.1x fp32. Blocks of 32 agreed on 99.7% of both but ran no faster than fp32; blocks of 128 on 99.3% of dev.
- int8-dynamic: int8 weights with one scale per output channel (in 7 bits, reduce_range, which avoids the
  int16 overflow of ONNX Runtime's int8 kernels on CPUs without VNNI), and each activation matrix
  quantised with one scale for the whole batch. 2x fp32, but 97.6% and 98.4%: one scale per batch is coarse
  next to BERT's outlier channels, and either feed-forward matmul alone flips 2% of the dev texts. Every flip
  seen was a text torch itself scored within 0.15 of a tie.
"""
assert tuple(QUANTIZE) == QUANTIZED  # backends.FILES names a file for each
RECORD = "export.json"
OPSET = 17
"""17 has LayerNormalization as one operator, which ONNX Runtime runs fused."""
FP32_TOLERANCE = 1e-3
"""Largest |logit difference| from torch an fp32 export may show (fp32 rounding is ~1e-6); more means the
tracer baked in something input-dependent, and the export is refused."""
SAMPLE_WORDS = (
    "my invoice shows a refund that never arrived , and the app crashes at login every single time ; "
    "still I love the new design and would suggest it to a friend"
).split()


class _Logits(torch.nn.Module):
    """θ̃ with positional tensor inputs and the logits alone as output: what the TorchScript tracer takes."""

    def __init__(self, model: PreTrainedModel, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True))).logits


def input_names(model: PreTrainedModel) -> list[str]:
    """input_ids and attention_mask, plus token_type_ids where the model takes them (BERT does, RoBERTa-likes
    too, DistilBERT not), so the file has the inputs other ONNX tools expect of this architecture.
    """
    takes = inspect.signature(model.forward).parameters
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in takes else [])


def sample_batches(tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[dict[str, torch.Tensor]]:
    """Padded batches of texts from 1 word to max_length tokens. The first (2 texts) is traced; the others have
    other shapes, so a size the tracer baked into the graph shows up as an error or a diff when checked.
    """
    texts = [" ".join((SAMPLE_WORDS * 40)[:n]) for n in (9, 3, 1, 4, 17, 2, 30, 1000)]
    ids = encode_texts(tokenizer, texts, max_length)
    pad_id = tokenizer.pad_token_id
    return [collate(group, pad_id) for group in (ids[:2], ids[2:3], ids[3:6], ids)]


def _trace(
    model: PreTrainedModel, names: list[str], example: dict[str, torch.Tensor], path: Path, per_token: bool = False
) -> None:
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    example = {**example, "token_type_ids": torch.zeros_like(example["input_ids"])}
    # eval() matters: a new Module is in training mode, and export gives that mode back to θ̃ when done.
    wrapper = _Logits(model, names).eval()
    with warnings.catch_warnings(), quiet_transformers():
        # The tracer warns at every Python bool taken from a tensor (transformers' mask checks). Each is
        # harmless or caught by export_onnx, which checks the file on batches of other shapes before keeping it.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy TorchScript exporter": below
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            wrapper,
            tuple(example[name] for name in names),
            str(path),
            # The dynamo exporter (torch's default since 2.9) needs onnxscript; the TorchScript one, deprecated
            # but working in torch 2.13, needs nothing more and gives the same logits (checked below).
            dynamo=False,
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
        )


@contextlib.contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """ONNX Runtime's quantisers configure the root logger: matmul_nbits_quantizer calls basicConfig(INFO)
    when imported, quantize_dynamic logs "consider pre-processing" through it. Either would turn on INFO
    logging for the whole user process. (That pre-processing left the agreement with torch the same.)
    """
    root = logging.getLogger()
    handlers, level, root.handlers = root.handlers, root.level, [logging.NullHandler()]
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level


def _quantize(fp32: Path, out: Path, name: str) -> None:
    """Write fp32's int8 version `name` (a key of QUANTIZE) to out. Neither needs calibration data."""
    settings = dict(QUANTIZE[name])
    method = settings.pop("method")
    with _root_logging_untouched():
        if method == "quantize_dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(fp32, out, **{**settings, "weight_type": QuantType[settings["weight_type"]]})
            return
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        config = DefaultWeightOnlyQuantConfig(**settings, op_types_to_quantize=("MatMul",))
        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=False)


def max_abs_diff(path: Path, batches: list[dict[str, torch.Tensor]], expected: list[torch.Tensor]) -> float:
    """Largest |logit difference| between a file run by ONNX Runtime and torch on the sample batches."""
    forward = session_forward(path)
    return max(float((forward(b) - e).abs().max()) for b, e in zip(batches, expected, strict=True))


def export_run(run_dir: str | Path, fmt: str = "onnx", quantize: str | None = None) -> str:
    """What `tunesmith export` does: export in a format (only onnx so far), then one line per file written."""
    if fmt != "onnx":
        raise ConfigError(f"--format must be onnx (the only export format so far), got '{fmt}'")
    folder = export_onnx(run_dir, quantize).parent
    record = json.loads((folder / RECORD).read_text())
    shown = f"on {len(record['sample_batches'])} sample batches"
    written = [FILES["onnx"]] + ([FILES[f"onnx-{quantize}"]] if quantize else [])
    return "\n".join(
        f"wrote {folder / name} (max |logit - torch| {record['files'][name]['max_abs_diff']:.2g} {shown})"
        for name in written
    )


def export_onnx(run_dir: str | Path, quantize: str | None = None) -> Path:
    """Write RUN/onnx/model.onnx (and with quantize, a key of QUANTIZE, also model.<quantize>.onnx, made
    from it) and RUN/onnx/export.json; returns the path of the file asked for. Each file appears whole or not
    at all.
    """
    require_onnx()
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"--quantize must be {' or '.join(QUANTIZE)}, got '{quantize}'")
    from tunesmith.tasks import for_run, supporting

    run, task = for_run(run_dir)
    if "onnx" not in task.backends:  # told before any weights load
        runs = supporting(lambda t: "onnx" in t.backends)
        raise ConfigError(f"{run_dir}: export supports {runs} runs only (this is a {task.name} run)")
    model = load_finetuned(str(run.path), task.model_class, run.labels).eval()
    tokenizer = load_tokenizer(local(run.path))
    names = input_names(model)
    batches = sample_batches(tokenizer, run.max_length)
    with torch.inference_mode():
        expected = [model(**b).logits.float() for b in batches]

    folder = run.path / ONNX_DIR
    files: dict[str, dict[str, Any]] = {}
    fp32 = folder / FILES["onnx"]
    with atomic_path(fp32) as tmp:
        _trace(model, names, batches[0], tmp, per_token=expected[0].dim() == 3)  # a tag per token
        diff = max_abs_diff(tmp, batches, expected)
        if not diff <= FP32_TOLERANCE:  # NaN too
            raise ModelError(
                f"{run_dir}: the ONNX export's logits differ from torch's by {diff:.3g} (> {FP32_TOLERANCE}); "
                "this architecture does not trace correctly, so nothing was written"
            )
    files[fp32.name] = {"max_abs_diff": diff}
    if quantize:
        int8 = folder / FILES[f"onnx-{quantize}"]
        with atomic_path(int8) as tmp:
            _quantize(fp32, tmp, quantize)
        files[int8.name] = {"max_abs_diff": max_abs_diff(int8, batches, expected), "quantize": QUANTIZE[quantize]}
    _write_record(folder, names, batches, files)
    return folder / FILES[f"onnx-{quantize}" if quantize else "onnx"]


def _write_record(
    folder: Path, names: list[str], batches: list[dict[str, torch.Tensor]], files: dict[str, dict[str, Any]]
) -> None:
    """export.json; an earlier export's entry stays for a file this export did not rewrite (an int8 file
    is made from the same weights, which a run folder never changes).
    """
    import onnxruntime

    path = folder / RECORD
    earlier = json.loads(path.read_text())["files"] if path.is_file() else {}
    kept = {name: entry for name, entry in earlier.items() if name not in files and (folder / name).is_file()}
    record = {
        "format": "onnx",
        "opset": OPSET,
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "inputs": names,
        "outputs": ["logits"],
        "dynamic_axes": {"batch": 0, "sequence": 1},
        "sample_batches": [list(b["input_ids"].shape) for b in batches],
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "files": {**kept, **files},
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
