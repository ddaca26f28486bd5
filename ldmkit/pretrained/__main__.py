"""``python -m ldmkit.pretrained pack MODEL_DIR [OUT]``: write a model folder in the shipped form;
``python -m ldmkit.pretrained verify [DIR]``: check the shipped files against SHA256SUMS."""

import argparse
import sys
from pathlib import Path

from ldmkit.pretrained import SHAPES64, pack, verify
from ldmkit.storage import CheckpointError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ldmkit.pretrained")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="write MODEL_DIR (written by `ldmkit train`) in the shipped form")
    a.add_argument("model_dir")
    a.add_argument("out", nargs="?", default=str(SHAPES64))
    v = sub.add_parser("verify", help="check a shipped folder's files against its SHA256SUMS")
    v.add_argument("folder", nargs="?", default=str(SHAPES64))
    args = p.parse_args(argv)
    try:
        if args.command == "pack":
            out = pack(args.model_dir, args.out)
            size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
            print(f"packed {args.model_dir} into {out} ({size:.1f} MiB)")
        else:
            bad = verify(Path(args.folder))
            if bad:
                print(f"error: checksum mismatch in {args.folder}: {', '.join(bad)}", file=sys.stderr)
                return 1
            print(f"{args.folder}: all files match SHA256SUMS")
    except (CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
