"""``python -m selfsup_zoo.convert {care,sere} SRC OUT_DIR [--checkpoint NAME] [--which ...]
[--install]``: convert an official checkpoint into a hub folder (see :mod:`selfsup_zoo.convert`)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import UnknownNameError, ZooError
from ..weights import installed_path
from . import convert_to_hub_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup_zoo.convert",
        description="Convert an official CARE or SERE checkpoint into a timm hub folder "
        "(config.json + model.safetensors + README.md).",
    )
    parser.add_argument("method", choices=("care", "sere"))
    parser.add_argument("src", help="official checkpoint file (.pth / .pth.tar)")
    parser.add_argument("out_dir", help="hub folder to write")
    parser.add_argument(
        "--checkpoint",
        help="catalog name, e.g. care_resnet50.in1k_ep100 "
        "(default: inferred from the file when unambiguous)",
    )
    parser.add_argument(
        "--which",
        choices=("student", "teacher"),
        help="network of a full pre-training checkpoint (default: CARE student, SERE teacher)",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="also copy the folder into the local weights directory so that "
        "timm.create_model(<name>, pretrained=True) finds it offline",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result, folder = convert_to_hub_folder(
            args.method,
            args.src,
            args.out_dir,
            checkpoint=args.checkpoint,
            which=args.which,
            install=args.install,
        )
    except (ZooError, UnknownNameError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"note: {note}")
    network = result.provenance.get("network", "unknown")
    print(f"exported network: {network} (from the {result.provenance.get('format', 'file')})")
    print(
        f"architecture: {result.arch} (timm {result.timm_arch}), {len(result.state_dict)} tensors"
    )
    if result.checkpoint:
        inferred = "" if args.checkpoint else " (inferred; pass --checkpoint to override)"
        print(f"checkpoint: {result.checkpoint}{inferred}")
    else:
        print(
            "checkpoint: not determined from the file; candidates: "
            + ", ".join(result.candidates)
            + " (pass --checkpoint NAME)"
        )
    print(f"hub folder: {folder.path}")
    print(f"sha256: {folder.sha256}")
    if args.install and result.checkpoint:
        print(f"installed: {installed_path(result.checkpoint)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
