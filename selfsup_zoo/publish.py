"""Validate a hub folder and upload it to the Hugging Face Hub.

``python -m selfsup_zoo.publish FOLDER --repo-id ORG/NAME [--dry-run] [--private]
[--revision REV]``. Validation (always run, and all a dry run does): ``config.json`` names an
architecture that plain timm knows, the weights file is sound (header, size, sha256 recorded in the
config), the model card has Hugging Face metadata with a licence, and the folder loads with
``timm.create_model('local-dir:<folder>', pretrained=True)`` in a fresh Python process that never
imports this package. The upload uses ``huggingface_hub.HfApi().upload_folder``; the token comes
from its usual places (``HF_TOKEN``, ``hf auth login``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import timm

from . import catalog
from .catalog import WEIGHTS_FILENAME
from .errors import CorruptWeightsError, InvalidHubFolderError
from .weights import file_sha256, read_safetensors_header

_logger = logging.getLogger(__name__)

__all__ = ["validate_hub_folder", "publish", "main"]

# Run by a clean interpreter: plain timm only. Fails if anything imported selfsup_zoo.
_PLAIN_TIMM_CHECK = r"""
import json, sys
import torch, timm
folder = sys.argv[1]
model = timm.create_model('local-dir:' + folder, pretrained=True).eval()
size = model.pretrained_cfg.get('input_size', (3, 224, 224))
with torch.no_grad():
    out = model(torch.zeros(1, *size))
assert 'selfsup_zoo' not in sys.modules, 'selfsup_zoo was imported'
print(json.dumps({'num_classes': model.num_classes, 'out_shape': list(out.shape),
                  'params': sum(p.numel() for p in model.parameters())}))
"""


def _front_matter(text: str) -> dict[str, str] | None:
    # The YAML block at the top of a Hugging Face model card; only top-level scalars are needed.
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    meta: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            return meta
        if ":" in line and not line.startswith((" ", "-")):
            key, _, value = line.partition(":")
            meta[key.strip()] = value.strip().strip("'\"")
    return None


def _plain_timm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"  # a local folder needs no network; never wait for time-outs
    return env


def validate_hub_folder(folder: str | os.PathLike[str], *, timeout: float = 600) -> dict[str, Any]:
    """Check that ``folder`` is a publishable hub folder; return its ``config.json``.

    Raises :class:`InvalidHubFolderError` listing every problem found.
    """
    folder = Path(folder).resolve()
    problems: list[str] = []
    config: dict[str, Any] = {}
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise InvalidHubFolderError(f"{folder} is not a directory.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append("config.json is missing")
    except json.JSONDecodeError as e:
        problems.append(f"config.json is not valid JSON ({e})")
    arch = config.get("architecture")
    if config and not isinstance(arch, str):
        problems.append("config.json has no 'architecture'")
    elif arch:
        if arch.split(".")[0] in catalog.architectures():
            problems.append(
                f"config.json names the zoo architecture {arch!r}, which plain timm cannot build: "
                "it must name timm's own architecture (e.g. resnet50, vit_small_patch16_224)"
            )
        elif not timm.is_model(arch):
            problems.append(f"config.json names {arch!r}, which is not a timm architecture")
        if not isinstance(config.get("pretrained_cfg", {}), dict):
            problems.append("config.json 'pretrained_cfg' is not an object")

    weights = folder / WEIGHTS_FILENAME
    weights_ok = False
    if not weights.is_file():
        problems.append(f"{WEIGHTS_FILENAME} is missing")
    else:
        try:
            read_safetensors_header(weights)
            weights_ok = True
        except CorruptWeightsError as e:
            problems.append(str(e))
        recorded = (config.get("selfsup_zoo") or {}).get("sha256")
        if weights_ok and recorded and file_sha256(weights) != recorded:
            problems.append(f"{WEIGHTS_FILENAME} sha256 differs from the one in config.json")

    readme = folder / "README.md"
    if not readme.is_file():
        problems.append("README.md (model card) is missing")
    else:
        meta = _front_matter(readme.read_text(encoding="utf-8"))
        if meta is None:
            problems.append("README.md has no metadata block ('---' YAML front matter)")
        elif not meta.get("license"):
            problems.append("README.md metadata has no 'license'")

    if not problems:
        with tempfile.TemporaryDirectory() as cwd:
            # Fresh interpreter, no PYTHONPATH, cwd outside any checkout: only installed timm.
            proc = subprocess.run(
                [sys.executable, "-c", _PLAIN_TIMM_CHECK, str(folder)],
                cwd=cwd,
                env=_plain_timm_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            problems.append(f"plain timm cannot load it with 'local-dir:{folder}':\n{tail}")
        else:
            _logger.info("plain timm loads %s: %s", folder, proc.stdout.strip())
    if problems:
        raise InvalidHubFolderError(
            f"{folder} is not a valid hub folder:\n- " + "\n- ".join(problems)
        )
    return config


def publish(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    dry_run: bool = False,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str | None:
    """Validate ``folder`` and upload it to ``repo_id``; return the commit URL (None if dry run)."""
    config = validate_hub_folder(folder)
    if dry_run:
        return None
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    name = (config.get("selfsup_zoo") or {}).get("checkpoint") or config.get("architecture")
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"Upload {name}",
    )
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup_zoo.publish",
        description="Validate a hub folder and upload it to the Hugging Face Hub.",
    )
    parser.add_argument("folder")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME of the model repo")
    parser.add_argument("--dry-run", action="store_true", help="validate only, upload nothing")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to upload to (created if missing)")
    parser.add_argument("--commit-message")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.repo_id.count("/") != 1:
        parser.error("--repo-id must look like ORG/NAME")
    try:
        url = publish(
            args.folder,
            args.repo_id,
            dry_run=args.dry_run,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
        )
    except InvalidHubFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if url is None:
        print(
            f"dry run: {args.folder} is valid; would upload to {args.repo_id}"
            + (f"@{args.revision}" if args.revision else "")
            + ". Nothing uploaded."
        )
    else:
        print(f"uploaded: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
