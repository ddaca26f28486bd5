"""Prompt-to-Prompt on a text model (the default shipped one unless --model): does an edited prompt change only what
it says?

    python benchmarks/prompt_to_prompt.py --count 200 --results benchmarks/PROMPT_TO_PROMPT.md \\
        --figure benchmarks/prompt_to_prompt.png

Four kinds of edit, ``--count`` of each, from seeded random scenes of the shapes vocabulary (sizes stated
only in the size swap and the position change):

- colour swap (replace): one object of a two-object prompt gets another colour;
- shape swap (replace): one object gets another shape;
- size swap (replace): one object goes small ↔ large;
- position change (refine): "a small red circle" → "a small red circle on the left" (words added).

Each generated edit starts from the first starting noise whose source image the judge finds right, as one
edits an image one likes: ``--candidates`` noises at a time, in up to ``--rounds`` rounds for the edits still
without one (the first noise when none is; the table also gives success among the edits whose source is
right). Each edit is run twice from that z_T: Prompt-to-Prompt (the source's attention for the first
``--cross-replace`` / ``--self-replace`` of the steps, local blend on the edited object's shape words with
``--blend-threshold``; each a number, or a default then per-kind values: ``0.8,shape=0.4``) and the plain
baseline (the target prompt sampled with the same seed, no control). Measured, for both:

- success: the shapes judge (`AttributePredictor`) finds every attribute of the target prompt in the edit;
  also among the edits whose source image the judge finds right (an edit inherits a wrong source's layout);
- layout kept: IoU of the unchanged object's mask between source and edit (masks by colour: each pixel
  labelled with the nearest of the palette's colours and the background), and for a colour swap the edited
  object's own IoU (old colour in the source against new colour in the edit: its shape should stay); for a
  position change, the share of edits whose object keeps the source's shape, colour and size;
- PSNR of the region outside the edited object (outside both its source and edit masks, dilated by 2 px).

Real renders (``--real-count``): two-object scenes drawn by `render_scene` are inverted under their captions
(null-text inversion), reconstruction PSNR measured, then the colour swap is applied to them, against the
plain baseline from the same inversion (the target prompt sampled from the inverted z_T with the optimised
null contexts, no control).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ldmkit.data import save_grid
from ldmkit.data.images import image_to_tensor
from ldmkit.data.shapes import (BACKGROUND, COLORS, RGB, SHAPES, Scene, ShapeObject, parse_prompt,
                                prompt_matches_scene, render_scene, sample_scene)
from ldmkit.eval.attributes import AttributePredictor
from ldmkit.pipelines import PromptToPromptPipeline, TextToImagePipeline
from ldmkit.pretrained import DEFAULT, resolve_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import command_line, markdown_table, show_results  # noqa: E402

KINDS = ("colour", "shape", "size", "position")
_PALETTE = np.array([BACKGROUND] + [RGB[c] for c in COLORS], dtype=np.float32)  # label 0: background
_POSITION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
_RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


def caption(scene: Scene, sizes: bool) -> str:
    """"a red circle above a blue square" (with ``sizes``: "a small red circle above a large blue square")."""

    def phrase(o: ShapeObject) -> str:
        words = " ".join(w for w in (o.size if sizes else None, o.color, o.shape) if w)
        return ("an " if words[0] in "aeiou" else "a ") + words

    if len(scene.objects) == 1:
        return phrase(scene.objects[0])
    return f"{phrase(scene.objects[0])} {_RELATION_WORDS[scene.relation]} {phrase(scene.objects[1])}"


@dataclass
class Edit:
    kind: str
    source: str
    target: str
    mode: str
    blend: list[str]
    edited_colors: tuple[str, str] | None  # the edited object's colour in the source and in the target
    other_color: str | None  # the unchanged object's colour (two-object edits)
    scene: Scene | None = None  # the source scene, as `sample_scene` drew it (for rendering)


def make_edit(kind: str, rng: random.Random) -> Edit:
    """One random edit of ``kind`` (see the module docstring)."""
    if kind == "position":
        obj = sample_scene(rng, max_objects=1, two_object_share=0.0).objects[0]
        plain = Scene((replace(obj, position=None),))
        position = rng.choice(sorted(_POSITION_WORDS))
        source = caption(plain, sizes=True)
        return Edit(kind, source, f"{source} {_POSITION_WORDS[position]}", "refine", [obj.shape], None, None)
    scene = sample_scene(rng, max_objects=2, two_object_share=1.0)
    k = rng.randrange(2)
    a, other = scene.objects[k], scene.objects[1 - k]
    if kind == "colour":
        new = replace(a, color=rng.choice([c for c in COLORS if c not in (a.color, other.color)]))
        blend = [a.shape]
    elif kind == "shape":
        new = replace(a, shape=rng.choice([s for s in SHAPES if s not in (a.shape, other.shape)]))
        blend = [a.shape, new.shape]
    else:
        new = replace(a, size="large" if a.size == "small" else "small")
        blend = [a.shape]
    objects = list(scene.objects)
    objects[k] = new
    target = Scene(tuple(objects), scene.relation)
    sizes = kind == "size"  # sizes are stated only where they are the edit
    return Edit(kind, caption(scene, sizes), caption(target, sizes), "replace", blend, (a.color, new.color),
                other.color, scene)


# --------------------------------------------------------------------------------------------------
# measures


def color_masks(images: torch.Tensor) -> np.ndarray:
    """Each pixel's nearest palette colour: int[B, H, W], 0 the background, c + 1 colour COLORS[c]."""
    rgb = ((images.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    return np.linalg.norm(rgb[..., None, :] - _PALETTE, axis=-1).argmin(-1)


def mask_of(labels: np.ndarray, color: str) -> np.ndarray:
    return labels == COLORS.index(color) + 1


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float("nan") if union == 0 else float((a & b).sum() / union)


def psnr_outside(x: torch.Tensor, y: torch.Tensor, region: np.ndarray) -> float:
    """PSNR (dB, images in [-1, 1]) over the pixels where ``region`` is True."""
    if region.sum() == 0:
        return float("nan")
    mse = ((x - y) ** 2).mean(0).numpy()[region].mean()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def dilate(mask: np.ndarray, pixels: int = 2) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * pixels + 1, stride=1, padding=pixels)[0, 0].numpy() > 0


@dataclass
class Tally:
    success: list[bool] = field(default_factory=list)
    success_given_source: list[bool] = field(default_factory=list)
    other_iou: list[float] = field(default_factory=list)
    edited_iou: list[float] = field(default_factory=list)
    kept: list[bool] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)


def measure(edit: Edit, source: torch.Tensor, edited: torch.Tensor, source_scene, edited_scene, tally: Tally) -> None:
    target = parse_prompt(edit.target)
    ok = edited_scene is not None and prompt_matches_scene(target, edited_scene)
    tally.success.append(ok)
    if source_scene is not None and prompt_matches_scene(parse_prompt(edit.source), source_scene):
        tally.success_given_source.append(ok)
    if edit.kind == "position":
        same = (source_scene is not None and edited_scene is not None and len(source_scene.objects) == 1
                and len(edited_scene.objects) == 1
                and replace(source_scene.objects[0], position=None) == replace(edited_scene.objects[0], position=None))
        tally.kept.append(same)
        return
    labels = color_masks(torch.stack([source, edited]))
    old, new = edit.edited_colors
    tally.other_iou.append(iou(mask_of(labels[0], edit.other_color), mask_of(labels[1], edit.other_color)))
    if edit.kind == "colour":
        tally.edited_iou.append(iou(mask_of(labels[0], old), mask_of(labels[1], new)))
    region = ~dilate(mask_of(labels[0], old) | mask_of(labels[1], new))
    tally.psnr.append(psnr_outside(source, edited, region))


def per_kind(text: str) -> dict[str | None, float]:
    """"0.8" (every kind) or "0.8,shape=0.4" (a default, then values for some kinds) → {kind or None: value}."""
    values: dict[str | None, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, value = part.rpartition("=")
        if kind and kind not in KINDS:
            raise argparse.ArgumentTypeError(f"{kind!r} is not a kind of edit; allowed: {', '.join(KINDS)}")
        values[kind or None] = float(value)
    if None not in values:
        raise argparse.ArgumentTypeError(f"{text!r} gives no default value (a number before the kind=value pairs)")
    return values


def setting(values: dict[str | None, float], kind: str) -> float:
    return values.get(kind, values[None])


def describe(values: dict[str | None, float]) -> str:
    return ", ".join([f"{values[None]:g}"] + [f"{k} {v:g}" for k, v in values.items() if k is not None])


def mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def share(values: list[bool]) -> str:
    return f"{100 * sum(values) / len(values):.1f}% ({sum(values)}/{len(values)})" if values else "–"


def number(value: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------------
# runs


def choose_sources(pipe: PromptToPromptPipeline, plain: TextToImagePipeline, judge: AttributePredictor,
                   batch: list[Edit], args, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_T, its source image) per edit: the first starting noise whose source image the judge finds right, as
    one edits an image one likes. Noises are drawn ``args.candidates`` per edit at a time, in up to
    ``args.rounds`` rounds, each round for the edits still without a right source only (round r: seed
    ``seed + 100003 r``, z_T as `TextToImagePipeline` draws it); the first noise where none is right."""
    k, n = args.candidates, len(batch)
    found: list = [None] * n
    first: list = [None] * n
    pending = list(range(n))
    for r in range(args.rounds):
        if not pending:
            break
        round_seed = seed + 100003 * r
        images = plain.generate_tensors([batch[i].source for i in pending], steps=args.steps,
                                        guidance=args.guidance, seed=round_seed, num_images=k)
        f = pipe.model.autoencoder.downsample_factor
        shape = (len(pending) * k, pipe.model.config.unet.out_channels, images.shape[-2] // f, images.shape[-1] // f)
        noises = torch.randn(shape, generator=torch.Generator().manual_seed(round_seed))
        scenes = judge(images)
        still = []
        for j, i in enumerate(pending):
            if first[i] is None:
                first[i] = (noises[j * k], images[j * k])
            rights = [c for c in range(k) if scenes[j * k + c] is not None
                      and prompt_matches_scene(parse_prompt(batch[i].source), scenes[j * k + c])]
            if rights:
                found[i] = (noises[j * k + rights[0]], images[j * k + rights[0]])
            else:
                still.append(i)
        pending = still
    picks = [f if f is not None else d for f, d in zip(found, first)]
    return torch.stack([p[0] for p in picks]), torch.stack([p[1] for p in picks])


def run_generated(pipe: PromptToPromptPipeline, plain: TextToImagePipeline, judge: AttributePredictor,
                  edits: list[Edit], args, tallies: dict, examples: list, seconds: dict) -> None:
    """Each edit starts from a source image the judge finds right where one is found (`choose_sources`);
    Prompt-to-Prompt and the plain baseline share its z_T."""
    for start in range(0, len(edits), args.batch):
        batch = edits[start: start + args.batch]
        n, kind = len(batch), batch[0].kind
        t1 = time.perf_counter()
        key = f"{kind}:{args.seed + start}:{args.candidates}x{args.rounds}:{args.precision}"
        if args.source_cache is not None and f"{key}:z" in args.source_cache:
            z_T, chosen_sources = args.source_cache[f"{key}:z"], args.source_cache[f"{key}:x"]
        else:
            z_T, chosen_sources = choose_sources(pipe, plain, judge, batch, args, args.seed + start)
            if args.source_cache is not None:
                args.source_cache.update({f"{key}:z": z_T, f"{key}:x": chosen_sources})
        t2 = time.perf_counter()
        source, edited = pipe.edit_tensors(
            [e.source for e in batch], [e.target for e in batch], mode=batch[0].mode,
            cross_replace_steps=setting(args.cross_replace, kind), self_replace_steps=setting(args.self_replace, kind),
            local_blend_words=None if args.no_blend else [e.blend for e in batch],
            blend_threshold=setting(args.blend_threshold, kind), steps=args.steps, guidance=args.guidance,
            latents=z_T)
        t3 = time.perf_counter()
        if args.no_baseline:  # scored as the edit itself (tuning runs leave the baseline rows out)
            baseline = edited
        else:
            baseline, _ = pipe.edit_tensors([e.target for e in batch], [e.target for e in batch],
                                            cross_replace_steps=0.0, self_replace_steps=0.0, steps=args.steps,
                                            guidance=args.guidance, latents=z_T)
        t4 = time.perf_counter()
        # the P2P source branch is the plain sample of the chosen noise, to float rounding (which 25 steps can
        # grow to a few thousandths at a pixel; another z_T would differ by ~1)
        assert (source - chosen_sources).abs().max() < 0.05, "z_T of the candidates was not reproduced"
        seconds["candidates"] += t2 - t1
        seconds["p2p"] += t3 - t2
        seconds["plain"] += t4 - t3
        seconds["edits"] += n
        scenes = judge(torch.cat([source, edited, baseline]))
        for i, e in enumerate(batch):
            measure(e, source[i], edited[i], scenes[i], scenes[n + i], tallies[kind, "p2p"])
            measure(e, source[i], baseline[i], scenes[i], scenes[2 * n + i], tallies[kind, "plain"])
            if sum(1 for x in examples if x[0] == kind) < 2:
                examples.append((kind, e, source[i], baseline[i], edited[i]))
        print(f"{kind}: {start + n}/{len(edits)} edits", file=sys.stderr, flush=True)


def run_real(pipe: PromptToPromptPipeline, judge: AttributePredictor, count: int, args, tallies: dict,
             psnrs: list[float], examples: list, seconds: dict) -> None:
    rng = random.Random(args.seed + 1)
    edits, images = [], []
    for _ in range(count):
        edit = make_edit("colour", rng)
        images.append(image_to_tensor(render_scene(edit.scene, 64, rng)))
        edits.append(edit)
    for start in range(0, count, args.batch):
        batch, x = edits[start: start + args.batch], torch.stack(images[start: start + args.batch])
        t0 = time.perf_counter()
        inversion = pipe.invert(x, [e.source for e in batch], num_inference_steps=args.steps,
                                 guidance_scale=args.guidance)
        t1 = time.perf_counter()
        seconds["inversion"] += t1 - t0
        seconds["real"] += len(batch)
        source, edited = pipe.edit_tensors(  # colour swaps: the colour swap's settings
            [e.source for e in batch], [e.target for e in batch], cross_replace_steps=setting(args.cross_replace, "colour"),
            self_replace_steps=setting(args.self_replace, "colour"),
            local_blend_words=None if args.no_blend else [e.blend for e in batch],
            blend_threshold=setting(args.blend_threshold, "colour"), image=inversion, steps=args.steps,
            guidance=args.guidance)
        _, baseline = pipe.edit_tensors(
            [e.source for e in batch], [e.target for e in batch], cross_replace_steps=0.0, self_replace_steps=0.0,
            image=inversion, steps=args.steps, guidance=args.guidance)
        psnrs += [10 * math.log10(4.0 / float(((s - r) ** 2).mean())) for s, r in zip(source, x)]
        n = len(batch)
        scenes = judge(torch.cat([x, edited, baseline]))
        for i, e in enumerate(batch):
            measure(e, x[i], edited[i], scenes[i], scenes[n + i], tallies["real", "p2p"])
            measure(e, x[i], baseline[i], scenes[i], scenes[2 * n + i], tallies["real", "plain"])
            if sum(1 for ex in examples if ex[0] == "real") < 2:
                examples.append(("real", e, x[i], baseline[i], edited[i]))
        print(f"real: {start + n}/{count} renders", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# report


def report(tallies: dict, psnrs: list[float], args, seconds: dict, argv, pipe_precision: str) -> str:
    header = ["edit", "method", "success", "success, source right", "unchanged object IoU", "edited object IoU",
              "PSNR outside (dB)", "attributes kept"]
    names = {"colour": "colour swap", "shape": "shape swap", "size": "size swap", "position": "position (refine)",
             "real": "colour swap, real renders"}
    rows = []
    for kind in [*KINDS, "real"]:
        for method, label in (("p2p", "Prompt-to-Prompt"), ("plain", "plain re-prompt"))[:1 if args.no_baseline else 2]:
            t = tallies.get((kind, method))
            if t is None or not t.success:
                continue
            rows.append([names[kind], label, share(t.success), share(t.success_given_source), number(mean(t.other_iou)),
                         number(mean(t.edited_iou)), number(mean(t.psnr), 1), share(t.kept)])
    lines = [
        f"# Prompt-to-Prompt on {args.model_label}",
        "",
        f"DDIM {args.steps} steps, guidance {args.guidance:g}, {pipe_precision}; Prompt-to-Prompt with cross-attention "
        f"from the source for the first {describe(args.cross_replace)} and self-attention for the first "
        f"{describe(args.self_replace)} of the steps"
        + ("" if args.no_blend else f", local blend on the edited object's shape word(s) (threshold "
           f"{describe(args.blend_threshold)})")
        + f"; real renders take the colour swap's settings; the plain re-prompt is the target prompt from the same "
        f"z_T. {args.count} edits per kind, each from the first of up to {args.candidates * args.rounds} starting "
        f"noises ({args.rounds} round(s) of {args.candidates}) whose source image the judge finds right (the first "
        "if none is) (benchmarks/prompt_to_prompt.py's docstring defines each measure).",
        "",
        markdown_table(header, rows),
        "",
    ]
    if psnrs:
        lines.append(f"- real renders: null-text inversion reconstruction PSNR {np.mean(psnrs):.2f} dB "
                     f"(median {np.median(psnrs):.2f}, min {np.min(psnrs):.2f}) over {len(psnrs)} renders; "
                     f"{seconds['inversion'] / max(seconds['real'], 1):.1f} s per image to invert")
    if seconds["edits"]:
        lines.append(f"- time per edit: Prompt-to-Prompt {seconds['p2p'] / seconds['edits']:.2f} s (source and edit in one "
                     f"batch), choosing its source {seconds['candidates'] / seconds['edits']:.2f} s, "
                     f"batches of {args.batch}, {torch.get_num_threads()} CPU thread(s)")
    lines += ["", f"![examples]({Path(args.figure).name})" if args.figure else "", "",
              "Figure: rows of source | plain re-prompt | Prompt-to-Prompt edit, two of each kind "
              "(colour, shape, size, position, real renders).", "",
              f"Regenerate: `{command_line(argv)}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a text model, or a shipped model's name (default: the default shipped model)")
    parser.add_argument("--count", type=int, default=200, help="edits per kind (default 200)")
    parser.add_argument("--real-count", type=int, help="real renders to invert and edit (default: --count)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"the generated edits to run (default {','.join(KINDS)})")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--cross-replace", type=per_kind, default=per_kind("0.8"),
                        help="a fraction, or a default then kind=fraction pairs: 0.8,shape=0.4 (default 0.8)")
    parser.add_argument("--self-replace", type=per_kind, default=per_kind("0.4"), help="as --cross-replace (default 0.4)")
    parser.add_argument("--blend-threshold", type=per_kind, default=per_kind("0.3"),
                        help="local blend's threshold, as --cross-replace (default 0.3)")
    parser.add_argument("--no-blend", action="store_true", help="Prompt-to-Prompt without local blend")
    parser.add_argument("--batch", type=int, default=8, help="edits per sampling batch")
    parser.add_argument("--candidates", type=int, default=4,
                        help="starting noises tried per generated edit; the first whose source the judge finds right "
                             "is edited, drawn per round (default 4; 1: the seed's own)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of --candidates noises for the edits still without a right source (default 1)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="the pipelines' precision (default fp32, as `ldmkit edit`)")
    parser.add_argument("--source-cache", metavar="FILE",
                        help="keep each batch's chosen z_T and source image in FILE (torch tensors) and reuse them in "
                             "later runs with the same seed, kinds, --candidates, --rounds and --precision")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain re-prompt (tuning runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--results", help="write the results markdown here")
    parser.add_argument("--figure", help="write the example grid (PNG) here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache_file = args.source_cache
    args.source_cache = None
    if cache_file is not None:
        args.source_cache = torch.load(cache_file, weights_only=True) if Path(cache_file).is_file() else {}
    args.model_label = f"`{args.model}`" if args.model else f"the default shipped model, `{DEFAULT}`"
    args.model = resolve_model(args.model)
    pipe = PromptToPromptPipeline.from_folder(args.model, precision=args.precision)
    plain = TextToImagePipeline(pipe.model, precision=pipe.precision)
    plain.nhwc = pipe.nhwc  # decode as the edit pipeline does
    judge = AttributePredictor()
    rng = random.Random(args.seed)
    tallies = {(k, m): Tally() for k in [*KINDS, "real"] for m in ("p2p", "plain")}
    examples: list = []
    seconds = {"candidates": 0.0, "p2p": 0.0, "plain": 0.0, "edits": 0, "inversion": 0.0, "real": 0}
    kinds = [k for k in args.kinds.split(",") if k]
    if not set(kinds) <= set(KINDS):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    for kind in kinds:
        run_generated(pipe, plain, judge, [make_edit(kind, rng) for _ in range(args.count)], args, tallies, examples,
                      seconds)
    if cache_file is not None:
        torch.save(args.source_cache, cache_file)
    psnrs: list[float] = []
    real_count = args.count if args.real_count is None else args.real_count
    if real_count:
        run_real(pipe, judge, real_count, args, tallies, psnrs, examples, seconds)
    if args.figure:
        rows = [im for _, _, s, b, e in examples for im in (s, b, e)]
        big = F.interpolate(torch.stack(rows), scale_factor=2, mode="nearest")
        save_grid(big, args.figure, nrow=3)
        print(f"wrote {args.figure}")
    show_results(report(tallies, psnrs, args, seconds, argv, pipe.precision), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
