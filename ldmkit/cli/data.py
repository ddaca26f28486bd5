"""`ldmkit data pack`: write WebDataset tar shards from an image folder or the built-in shapes.
`ldmkit data cache`: encode a preset's training data once with a frozen autoencoder (the latent cache)."""

from __future__ import annotations

import sys
from pathlib import Path

from ldmkit.cli.common import UsageError, bounded_int, load_training_config, positive_int, seed_int, unit_interval
from ldmkit.cli.outputs import check_output_dir

MAX_PACK_SIDE = 4096  # pixels: the largest side `data pack` resizes to
from ldmkit.data.imagefolder import find_images
from ldmkit.data.latent_cache import MANIFEST, build_latent_cache, check_condition
from ldmkit.data.shards import folder_samples, shapes_samples, write_shards


def cmd_pack(args) -> None:
    skipped: list[str] = []
    if args.src == "shapes":
        samples = shapes_samples(args.num_samples, args.image_size or 64, args.seed, args.max_objects,
                                 args.two_object_share)
        total = args.num_samples
    elif Path(args.src).is_dir():
        samples = folder_samples(args.src, args.image_size, skipped)
        total = len(find_images(Path(args.src)))  # the bar's end: the unreadable ones are left out as met
    else:
        raise UsageError(f"SRC {args.src!r} is neither 'shapes' nor a folder of images")
    out = check_output_dir(args.out)
    if out.is_dir() and any(out.glob("*.tar")):
        raise UsageError(f"--out {out} already holds .tar shards; choose an empty folder")
    shards = write_shards(samples, out, args.shard_size, total, progress=not args.no_progress)
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped[:5])}", file=sys.stderr)
    print(f"wrote {len(shards)} shard(s) to {out}; train on them with data.source: {out}")


def cmd_cache(args) -> None:
    check_output_dir(args.out)
    preset = load_training_config(args)
    check_condition(preset.condition.kind)
    if (Path(args.out) / MANIFEST).exists():
        raise UsageError(f"--out {args.out} already holds a latent cache; choose another folder or delete it")
    out = build_latent_cache(args.autoencoder, preset.data, args.out, args.batch_size, args.device, args.dtype,
                             not args.no_progress)
    print(f"wrote the latent cache {out}; train from it with data.latent_cache: {out} in the same config")


def add_parsers(sub) -> None:
    p = sub.add_parser("data", help="prepare training data")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    pack = data_sub.add_parser("pack", help="write WebDataset tar shards (image + caption)")
    pack.add_argument("src", help="'shapes' (the built-in dataset) or a folder of captioned images")
    pack.add_argument("--out", required=True, help="the folder for the shards 000000.tar, 000001.tar, …")
    pack.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard (default 1000)")
    pack.add_argument("--image-size", type=bounded_int(8, MAX_PACK_SIDE, "memory grows with the pixel count"),
                      help="centre-crop and resize to this size, stored as PNG (shapes: default 64; "
                           "a folder: default none, the files are stored as they are)")
    pack.add_argument("--num-samples", type=positive_int, default=10_000, help="shapes: how many scenes")
    pack.add_argument("--seed", type=seed_int, default=0, help="shapes: the dataset seed")
    pack.add_argument("--max-objects", type=int, choices=(1, 2), default=2,
                      help="shapes: at most this many objects per scene (default 2; data.max_objects)")
    pack.add_argument("--two-object-share", type=unit_interval, default=0.5,
                      help="shapes: the share of two-object scenes when --max-objects is 2 "
                           "(default 0.5; data.two_object_share)")
    pack.add_argument("--no-progress", action="store_true", help="no progress bar")
    pack.set_defaults(func=cmd_pack)

    cache = data_sub.add_parser("cache", help="encode the training data once with the frozen autoencoder "
                                              "(train from it with data.latent_cache)")
    cache.add_argument("--autoencoder", required=True, help="folder written by `ldmkit train-autoencoder`")
    cache.add_argument("--preset", help="a built-in preset: its data section is encoded")
    cache.add_argument("--config", help="a YAML file in the preset layout: its data section is encoded")
    cache.add_argument("--out", required=True, help="the cache folder (mean.npy, std.npy, captions.json, cache.json)")
    cache.add_argument("--batch-size", type=positive_int, default=32, help="images per encoder pass (default 32)")
    cache.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                       help="storage of μ and σ (default float16: half the disk, rounding ≤ 5e-4 relative)")
    cache.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    cache.add_argument("--no-progress", action="store_true", help="no progress bar")
    cache.set_defaults(func=cmd_cache)
