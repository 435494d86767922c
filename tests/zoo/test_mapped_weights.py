"""``load_weights`` maps the safetensors file copy-on-write: same tensors as safetensors' own
reader, no copy, writes never reach the file, and a file whose tensors overlap is refused."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import selfsup_zoo.models  # noqa: F401  (registers the zoo's architectures)
from selfsup_zoo.errors import CorruptWeightsError
from selfsup_zoo.weights import file_sha256, load_weights


def test_every_dtype_reads_as_safetensors_reads_it(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {
        "u8": torch.tensor([1, 2, 3], dtype=torch.uint8),
        "f32": torch.randn(5, 7, generator=g),
        "i64": torch.tensor([-3, 2**40]),
        "bf16": torch.randn(3, generator=g).to(torch.bfloat16),
        "f16": torch.randn(2, 2, generator=g).half(),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "f64": torch.randn(4, generator=g, dtype=torch.float64),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path))
    mapped, reference = load_weights(path), load_file(str(path))
    assert set(mapped) == set(reference) == set(tensors)
    for name, tensor in reference.items():
        assert mapped[name].dtype == tensor.dtype and torch.equal(mapped[name], tensor), name
        assert torch.equal(mapped[name], tensors[name]), name


def test_a_misaligned_tensor_is_copied_to_aligned_memory(tmp_path: Path) -> None:
    """safetensors' writer puts wide dtypes first, but the format allows a float32 tensor at an odd
    offset (another writer, 3 bytes of uint8 first): it cannot be a view of the mapping."""
    values = torch.tensor([1.5, -2.0, 3.25], dtype=torch.float32)
    path = tmp_path / "odd.safetensors"
    _with_header(
        path,
        {
            "bytes": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
            "floats": {"dtype": "F32", "shape": [3], "data_offsets": [3, 15]},
        },
        bytes([7, 8, 9]) + values.numpy().tobytes(),
    )
    state = load_weights(path)
    assert state["bytes"].tolist() == [7, 8, 9]
    assert torch.equal(state["floats"], values)
    assert state["floats"].data_ptr() % 4 == 0


def test_a_pretrained_model_shares_one_mapping_and_training_never_writes_the_file(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    source = timm.create_model("care_resnet50")
    path = tmp_path / "r50.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    digest = file_sha256(path)

    model = timm.create_model(
        "care_resnet50", pretrained=True, pretrained_cfg_overlay={"file": str(path)}
    )
    # no copy: every parameter is a view of the one file-sized mapping
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(storages) == 1
    assert model.get_parameter("conv1.weight").untyped_storage().nbytes() == path.stat().st_size

    # an optimiser step and a BatchNorm update write the model's tensors, not the file
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    for name in ("conv1.weight", "bn1.running_mean"):
        assert not torch.equal(model.state_dict()[name], source.state_dict()[name]), name
    assert file_sha256(path) == digest
    again = load_weights(path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(again[name], tensor), name


def _with_header(path: Path, header: dict[str, object], data: bytes) -> None:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_overlapping_or_gapped_tensors_are_refused(tmp_path: Path) -> None:
    data = torch.arange(4, dtype=torch.float32).numpy().tobytes()
    overlapping = tmp_path / "overlap.safetensors"
    _with_header(
        overlapping,
        {
            "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
        },
        data,
    )
    with pytest.raises(CorruptWeightsError, match="'b' starts at byte 8, not at 12"):
        load_weights(overlapping)

    gapped = tmp_path / "gap.safetensors"
    _with_header(
        gapped,
        {
            "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
        },
        data,
    )
    with pytest.raises(CorruptWeightsError, match="'b' starts at byte 8, not at 4"):
        load_weights(gapped)
