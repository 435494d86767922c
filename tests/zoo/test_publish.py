"""``python -m selfsup_zoo.publish --dry-run`` validates a hub folder without uploading."""

from __future__ import annotations

import json
import shutil

import pytest
import timm

from selfsup_zoo import write_hub_folder
from selfsup_zoo.errors import InvalidHubFolderError
from selfsup_zoo.publish import main as publish_main
from selfsup_zoo.publish import validate_hub_folder


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    # A 32 px ViT-S keeps the plain-timm check in the child process quick.
    model = timm.create_model("vit_small_patch16_224", num_classes=0, img_size=32)
    return write_hub_folder(
        tmp_path_factory.mktemp("pub") / "hub",
        model.state_dict(),
        architecture="vit_small_patch16_224",
        model_args={"img_size": 32},
        checkpoint="sere_vit_small.in1k_ep100",
    )


def test_dry_run_validates_and_uploads_nothing(small_folder, tmp_path, python_runner):
    # As a user runs it: a child process, `python -m selfsup_zoo.publish ... --dry-run`.
    proc = python_runner(
        "import sys, runpy; sys.argv[0] = 'publish'; "
        "runpy.run_module('selfsup_zoo.publish', run_name='__main__')",
        str(small_folder.path),
        "--repo-id",
        "test-org/sere_vit_small.in1k_ep100",
        "--dry-run",
        "--private",
        "--revision",
        "v1",
        with_zoo=True,
        cwd=tmp_path,
    )
    assert "is valid; would upload to test-org/sere_vit_small.in1k_ep100@v1" in proc.stdout
    assert "Nothing uploaded" in proc.stdout
    assert "plain timm loads" in proc.stderr  # the local-dir: check ran in a clean interpreter


def _copy(folder, tmp_path):
    dest = tmp_path / "broken"
    shutil.copytree(folder.path, dest)
    return dest


def test_broken_folders_fail_validation(small_folder, tmp_path, capsys):
    broken = _copy(small_folder, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    config["architecture"] = "sere_vit_small"
    (broken / "config.json").write_text(json.dumps(config))
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:-100])
    (broken / "README.md").write_text("# no metadata\n")
    with pytest.raises(InvalidHubFolderError) as err:
        validate_hub_folder(broken)
    msg = str(err.value)
    assert "zoo architecture 'sere_vit_small'" in msg
    assert "model.safetensors is not a valid safetensors weights file" in msg
    assert "no metadata block" in msg
    assert publish_main([str(broken), "--repo-id", "a/b", "--dry-run"]) == 1
    assert "not a valid hub folder" in capsys.readouterr().err

    (broken / "README.md").write_text("---\nlibrary_name: timm\n---\n# card\n")
    (broken / "model.safetensors").unlink()
    with pytest.raises(InvalidHubFolderError, match="no 'license'") as err:
        validate_hub_folder(broken)
    assert "model.safetensors is missing" in str(err.value)


def test_weights_that_plain_timm_cannot_load_fail_validation(small_folder, tmp_path):
    broken = _copy(small_folder, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    config["architecture"] = "vit_base_patch16_224"  # a timm model, but not these weights
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidHubFolderError, match="plain timm cannot load it") as err:
        validate_hub_folder(broken)
    assert "size mismatch" in str(err.value)
