import torch
from safetensors.torch import load_file, save_file

from tunesmith.runs import TensorFile


def test_tensor_file_reads_what_safetensors_wrote(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = {
        "w": torch.randn(7, 5),
        "half": torch.randn(3, 2).to(torch.bfloat16),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
    }
    save_file(tensors, str(path), metadata={"format": "pt"})
    view, reference = TensorFile(path), load_file(str(path))
    assert sorted(view) == sorted(reference) and len(view) == 5 and "__metadata__" not in view
    for name, tensor in reference.items():
        got = view[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape and torch.equal(got, tensor)
