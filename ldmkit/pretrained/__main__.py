"""``python -m ldmkit.pretrained pack MODEL_DIR [OUT]``: write a model folder in the shipped form;
``python -m ldmkit.pretrained verify [DIR]``: check the shipped files against SHA256SUMS;
``python -m ldmkit.pretrained known-words --preset PRESET [--preset PRESET2 …] DIR…``: record the words and phrases
of the presets' training captions in each shipped folder DIR (`ldmkit.text.known_words`), as `ldmkit train` does for
a new model (and for a model fine-tuned with ``--init`` from one, the union of both)."""

import argparse
import functools
import sys
from pathlib import Path

from ldmkit.config import load_preset
from ldmkit.data import build_dataset
from ldmkit.data.dataset import dataset_captions, dataset_word_colours
from ldmkit.pretrained import DEFAULT, SHIPPED, pack, recorded_checksums, verify, write_checksums
from ldmkit.storage import CheckpointError, atomic_path
from ldmkit.text.known_words import CAPTIONS_READ, FILE, KnownWords


def record_known_words(folder: Path, presets: list[str]) -> Path:
    """Write ``folder/known_words.json`` from the captions of each of ``presets``' datasets, as `ldmkit train`
    records them (for a model trained before it did, or before it recorded phrases; a model trained in stages
    holds the union of its stages'), and add it to ``folder``'s SHA256SUMS."""
    datasets = [build_dataset(load_preset(preset).data) for preset in presets]
    words = functools.reduce(KnownWords.union, [
        KnownWords.from_captions(dataset_captions(data, CAPTIONS_READ), dataset_word_colours(data, CAPTIONS_READ))
        for data in datasets])
    with atomic_path(folder / FILE) as tmp:
        words.save(tmp)
    write_checksums(folder, tuple(dict.fromkeys([*recorded_checksums(folder), FILE])))
    return folder / FILE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ldmkit.pretrained")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="write MODEL_DIR (written by `ldmkit train`) in the shipped form")
    a.add_argument("model_dir")
    a.add_argument("out", nargs="?", default=str(SHIPPED[DEFAULT]))
    v = sub.add_parser("verify", help="check a shipped folder's files against its SHA256SUMS")
    v.add_argument("folder", nargs="?", default=str(SHIPPED[DEFAULT]))
    k = sub.add_parser("known-words", help="record the words of a preset's training captions in shipped folders")
    k.add_argument("--preset", required=True, action="append",
                   help="the preset the models were trained with (shapes64-varied); again for each stage of a model "
                        "trained in stages (shapes64-grounded-b128, then shapes64-grounded-polish)")
    k.add_argument("folders", nargs="+")
    args = p.parse_args(argv)
    try:
        if args.command == "pack":
            out = pack(args.model_dir, args.out)
            size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
            print(f"packed {args.model_dir} into {out} ({size:.1f} MiB)")
        elif args.command == "known-words":
            for folder in args.folders:
                print(f"wrote {record_known_words(Path(folder), args.preset)}")
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
