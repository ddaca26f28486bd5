"""Train the shapes judge (`ShapesNet`) on freshly rendered shapes and save it.

    nice -n 10 python -m ldmkit.eval.train_attributes --out ldmkit/eval/weights/shapes_net.safetensors

Every batch is rendered on the fly from (`TRAIN_SEED`, index), a seed that neither LDM training
(seed 0) nor the held-out evaluation images (`ldmkit.eval.heldout.HELDOUT_SEED`) use. Images are
drawn at 64, 48 or 32 pixels and resized to 64 (so that images of 32×32 models read well), with
mild blur, colour shifts and noise standing in for the imperfections of generated images.
Targets per colour come from the scene: present or not, and the shape and size of the object of
that colour.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ldmkit.data import COLORS, SHAPES, SIZES, image_to_tensor, shapes_sample
from ldmkit.eval.shapes_net import INPUT_SIZE, WEIGHTS_PATH, ShapesNet
from ldmkit.progress import tqdm
from ldmkit.storage import save_weights

TRAIN_SEED = 7_000_001
RENDER_SIZES = (64, 64, 48, 32)  # half the images at the network's own size
IGNORE = -100  # cross-entropy target for colours absent from the image


def labelled_batch(seed: int, indices: range | list[int], render_sizes=RENDER_SIZES) -> dict[str, torch.Tensor]:
    """Rendered images (B×3×64×64 in [-1, 1]; item i drawn at ``render_sizes[i % len]`` pixels and
    resized as `prepare` would) and per-colour targets: ``presence`` B×8 in {0, 1}, and ``shape``
    and ``size`` B×8 class indices (`IGNORE` where the colour is absent)."""
    n, k = len(indices), len(COLORS)
    images = torch.empty(n, 3, INPUT_SIZE, INPUT_SIZE)
    presence = torch.zeros(n, k)
    shape, size = (torch.full((n, k), IGNORE, dtype=torch.long) for _ in range(2))
    for row, index in enumerate(indices):
        render_size = render_sizes[index % len(render_sizes)]
        image, _, scene = shapes_sample(seed, index, render_size)
        x = image_to_tensor(image)
        if render_size != INPUT_SIZE:
            x = F.interpolate(x[None], size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)[0]
        images[row] = x
        for obj in scene.objects:
            c = COLORS.index(obj.color)
            presence[row, c] = 1
            shape[row, c] = SHAPES.index(obj.shape)
            size[row, c] = SIZES.index(obj.size)
    return {"images": images, "presence": presence, "shape": shape, "size": size}


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild corruptions that generated images show and renders do not: a little blur (half the
    images), per-channel gain and offset of a few percent, and Gaussian noise up to σ = 0.06."""
    b = images.shape[0]
    blur = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (blur[:, None] * blur[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    use_blur = (torch.rand(b, 1, 1, 1, generator=generator) < 0.5).float()
    images = use_blur * blurred + (1 - use_blur) * images
    gain = 1 + 0.05 * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)
    offset = 0.04 * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)
    sigma = 0.06 * torch.rand(b, 1, 1, 1, generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    return (images * gain + offset + sigma * noise).clamp(-1, 1)


def loss_fn(out, batch) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE on presence + CE on shape and size of the colours present. (Centres, hence positions
    and relations, are measured, not learned; the IS classes follow from presence and shape.)

    Colours the network skipped (``ABSENT_LOGIT``) have constant logits: BCE ≈ 0 and no gradient.
    """
    terms = {
        "presence": F.binary_cross_entropy_with_logits(out.presence, batch["presence"]),
        "shape": F.cross_entropy(out.shape.flatten(0, 1), batch["shape"].flatten(), ignore_index=IGNORE),
        "size": F.cross_entropy(out.size.flatten(0, 1), batch["size"].flatten(), ignore_index=IGNORE),
    }
    return sum(terms.values()), {k: v.item() for k, v in terms.items()}


def train(out: Path, steps: int, batch_size: int, lr: float, seed: int = 0, progress: bool = True,
          log_every: int = 100) -> Path:
    """AdamW with a one-cycle schedule over ``steps`` batches of fresh renders; saves the weights."""
    torch.manual_seed(seed)
    net = ShapesNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    order = random.Random(seed)
    net.train()
    start = time.time()
    recent: list[dict[str, float]] = []
    bar = tqdm(range(steps), desc="shapes judge", disable=not progress, dynamic_ncols=True)
    for step in bar:
        # Fresh indices every step: rendering is cheaper than holding an epoch in memory.
        batch = labelled_batch(TRAIN_SEED, [order.randrange(10**9) for _ in range(batch_size)])
        loss, terms = loss_fn(net(augment(batch["images"], generator)), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        recent.append(terms)
        bar.set_postfix(loss=f"{loss.item():.4f}", shape=f"{terms['shape']:.3f}")
        if not progress and (step + 1) % log_every == 0:
            mean = {k: sum(t[k] for t in recent) / len(recent) for k in recent[0]}
            print(f"step {step + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items())
                  + f" ({time.time() - start:.0f} s)", flush=True)
            recent = []
    save_weights(net.state_dict(), out)
    print(f"trained {steps} steps × {batch_size} images in {time.time() - start:.0f} s; wrote {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the shapes judge (ShapesNet) on rendered shapes.")
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: this network's ops are small, and on a shared CPU extra "
                             "threads mostly wait at barriers; measured 0.6 s/step with 1 thread, 4.6 s with 2)")
    parser.add_argument("--no-progress", action="store_true", help="no bar; print the mean losses every 100 steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args.out, args.steps, args.batch_size, args.lr, args.seed, not args.no_progress)


if __name__ == "__main__":
    main()
