"""Attribute-binding guidance (after SynGen, Rassin et al. 2023): steer z_t so that each modifier's
cross-attention map lies on its own noun's map and away from the other objects' words.

For a prompt's objects g = (modifiers M_g, noun n_g) ("a small red circle": M = {small, red}, n = circle),
let P_w be word w's cross-attention map of the conditional pass at z_t (`ldmkit.nn.cross_attention_maps`,
summed over the word's tokens) normalised to a distribution over the latent pixels, and
S(P, Q) = ½ (KL(P‖Q) + KL(Q‖P)). The loss

    L(z_t) = mean_{g, m ∈ M_g} S(P_m, P_{n_g}) − mean_{g, m ∈ M_g, w ∈ words of the other objects} S(P_m, P_w)

is small when every modifier attends where its own noun does and not where the other objects' words
do. It is zero for a prompt with one object: binding is between objects, and the first term alone
(pulling "red" onto "circle") cost one-object prompts accuracy. A prompt that relates two objects
("A above B", "A left of B", …) adds a layout term on the centres of mass (x̄, ȳ) of the two nouns'
maps (in [0, 1], y downwards), for "above"

    L_r = max(0, δ − (ȳ_B − ȳ_A))          (and alike for below, left of, right of),

asking A's noun to sit at least δ (``margin``) above B's. Each step's ε̂ then moves along the gradient,
rescaled per image to unit root-mean-square,

    ε̃ = ε̂ + λ ∇L / rms(∇L),   rms(g) = ‖g‖ / √(number of entries of z_t),      for t ≥ t_stop,

which moves the sampler's estimate of z_0 along −∇L by a step of λ in units of ε's own size (ε ~ N(0, I)
has rms 1), the same for every prompt. With ``normalized=False`` it is classifier guidance with exp(−λL)
as the likelihood of the binding instead,

    ε̃ = ε̂ + λ √(1 − ᾱ_t) ∇L,

whose step grows with the gradient: it pushed some images apart into the wrong number of objects while
others barely moved (experiments/BINDING_TUNING.md compares the two). An image whose loss has no gradient
(one object) is left as it is. The last, low-noise steps (t < t_stop) run without guidance, as SynGen
leaves its latent updates to the first half of sampling. One extra conditional UNet pass with its
backward per guided step.

Guidance moves an image only so far from where its z_T sends it, and some starting noises lay the two
objects out in a way the step cannot undo. So a prompt with two or more objects also chooses its z_T
(as Attend-and-Excite and InitNO judge a seed by its attention): ``candidates`` starting noises run the
first k = round(``select_after`` · steps) sampler steps, guided, as one batch, and the one with the
smallest L(z_{t_k}) goes on (`choose_candidates`); the others are dropped. The first candidate is the
z_T a run without selection draws, so a prompt with one object (L = 0 for every candidate) keeps it.
This costs k guided steps per rival: a quarter to a third more time for a two-object image with two
candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor

from ldmkit.diffusion.schedule import NoiseSchedule
from ldmkit.nn.cross_attention_maps import CrossAttentionRecorder, recording
from ldmkit.text.phrases import parse_phrases
from ldmkit.text.tokenizer import FixedLengthTokenizer

Denoiser = Callable[[Tensor, Tensor], Tensor]
Group = tuple[list[list[int]], list[int]]  # (the modifiers' token indices, one list per word; the noun's)


def words_of(tokens: list[str]) -> list[tuple[str, list[int]]]:
    """Whole words with their token indices: WordPiece's "##" pieces join the word before them,
    SentencePiece/byte-level BPE pieces without a leading "▁"/"Ġ" join the word before them, CLIP's
    "</w>" ends a word, and special tokens ([CLS], <s>, …) stand alone."""
    marked = any(t[:1] in ("▁", "Ġ") for t in tokens)  # SentencePiece / byte-level BPE: "▁" starts a word
    clip = any(t.endswith("</w>") for t in tokens)  # CLIP's BPE: "</w>" ends one
    words: list[tuple[str, list[int]]] = []
    open_word = False
    for i, token in enumerate(tokens):
        if (token[:1], token[-1:]) in (("[", "]"), ("<", ">")):  # [CLS], <s>, <|endoftext|>, …: a word alone
            words.append((token, [i]))
            open_word = False
            continue
        if token.startswith("##"):  # WordPiece
            joins = True
        elif clip:  # a word goes on until a piece ends with </w>
            joins = open_word
        else:  # SentencePiece / byte-level: a piece without the start marker goes on the word before
            joins = marked and open_word and token[:1] not in ("▁", "Ġ")
        piece = token.removeprefix("##").lstrip("▁Ġ").removesuffix("</w>")
        if joins and words:
            words[-1] = (words[-1][0] + piece, words[-1][1] + [i])
        else:
            words.append((piece, [i]))
        open_word = not (clip and token.endswith("</w>"))
    return words


def binding_groups(prompt: str, tokenizer: FixedLengthTokenizer) -> tuple[list[Group], str | None]:
    """The groups of ``prompt`` as ``tokenizer`` splits it — each object's noun with the modifiers the
    prompt gives it (`ldmkit.text.phrases.parse_phrases`), as token indices — and the relation of the
    first object to the second (or None). Words cut off by truncation drop out."""
    phrases = parse_phrases(prompt)
    groups: list[Group] = []
    for obj in phrases.objects:
        noun = tokenizer.token_indices(prompt, [obj.noun])
        if noun:
            mods = [tokenizer.token_indices(prompt, [m]) for m in obj.modifiers]
            groups.append(([m for m in mods if m], noun))
    return groups, phrases.relation if len(groups) >= 2 else None


def _symmetric_kl(p: Tensor, q: Tensor, eps: float = 1e-8) -> Tensor:
    p, q = p + eps, q + eps
    return 0.5 * ((p * (p / q).log()).sum() + (q * (q / p).log()).sum())


def binding_loss(maps: Tensor, groups: list[Group]) -> Tensor:
    """L for one image: ``maps`` float[L, h, w] (one per context token), ``groups`` from `binding_groups`.
    Zero when the prompt names fewer than two objects or no object has a modifier."""

    def dist(indices: list[int]) -> Tensor:
        m = maps[indices].sum(dim=0).flatten()
        return m / m.sum()

    loss = maps.new_zeros(())
    if len(groups) < 2:
        return loss
    positive, negative = [], []
    for g, (mods, noun) in enumerate(groups):
        others = [w for h, (other_mods, other_noun) in enumerate(groups) if h != g for w in [*other_mods, other_noun]]
        for m in mods:
            positive.append(_symmetric_kl(dist(m), dist(noun)))
            negative += [_symmetric_kl(dist(m), dist(w)) for w in others]
    if positive:
        loss = loss + torch.stack(positive).mean()
    if negative:
        loss = loss - torch.stack(negative).mean()
    return loss


# relation → (axis of the maps: 0 rows, 1 columns; sign: +1 when A's centre must be smaller on it than B's)
RELATION_AXES: dict[str, tuple[int, int]] = {"above": (0, 1), "below": (0, -1), "left of": (1, 1), "right of": (1, -1)}


def relation_loss(maps: Tensor, groups: list[Group], relation: str, margin: float = 0.25) -> Tensor:
    """L_r for one image whose first two groups are the objects A and B of "A ``relation`` B"."""
    if relation not in RELATION_AXES:
        raise ValueError(f"relation {relation!r}; allowed: {', '.join(RELATION_AXES)}")
    axis, sign = RELATION_AXES[relation]
    centres = []
    for _, noun in groups[:2]:
        m = maps[noun].sum(dim=0)
        profile = m.sum(dim=1 - axis)  # mass per row (axis 0) or per column (axis 1)
        coords = (torch.arange(profile.shape[0], device=m.device, dtype=m.dtype) + 0.5) / profile.shape[0]
        centres.append((profile * coords).sum() / profile.sum())
    return torch.relu(margin - sign * (centres[1] - centres[0]))


@dataclass(frozen=True)
class BindingGuidance:
    """λ (``scale``), the groups of each batch item's prompt and its relation between the first two
    groups (None: no layout term), t_stop as a fraction of T (``stop``), the form of the step
    (``normalized``: ∇L at unit rms; else classifier guidance's λ √(1 − ᾱ_t) ∇L), and the selection of
    z_T: ``candidates`` starting noises per prompt with objects to bind, the one with the smallest L
    after the first ``select_after`` fraction of the steps going on (`candidate_rows`, `choose_candidates`)."""

    scale: float
    groups: list[list[Group]]
    relations: list[str | None]
    stop: float = 0.5
    normalized: bool = True
    candidates: int = 2
    select_after: float = 0.2

    def __post_init__(self):
        if self.candidates < 1:
            raise ValueError(f"binding candidates = {self.candidates}; must be at least 1")
        if not 0 < self.select_after < 1:
            raise ValueError(f"binding select_after = {self.select_after}; must be between 0 and 1")

    def losses(self, maps: Tensor) -> Tensor:
        """L of each image of a batch of maps float[B, L, h, w]: float[B]."""
        per_image = []
        for b, (groups, relation) in enumerate(zip(self.groups, self.relations)):
            loss = binding_loss(maps[b], groups)
            if relation is not None and len(groups) >= 2:
                loss = loss + relation_loss(maps[b], groups, relation)
            per_image.append(loss)
        return torch.stack(per_image)

    def binds(self) -> list[int]:
        """The batch items whose prompt names two or more objects: the only ones L can be non-zero for."""
        return [b for b, groups in enumerate(self.groups) if len(groups) >= 2]

    def candidate_rows(self) -> list[int]:
        """The batch item each row of the selection batch draws: every item once (rows 0 … B−1, the
        z_T a run without selection would use), then ``candidates`` − 1 more rows for each item of
        `binds` (only those have an L to compare)."""
        return list(range(len(self.groups))) + self.binds() * (self.candidates - 1)

    def select_step(self, num_steps: int) -> int:
        """The sampler step index the candidates are compared at: round(``select_after`` · steps),
        at least 1; 0 when the run is too short to leave a step after it (no selection)."""
        k = max(1, round(self.select_after * num_steps))
        return k if k < num_steps else 0

    def rows(self, rows: list[int]) -> "BindingGuidance":
        """This guidance for a batch whose row r is item ``rows[r]`` of this one's batch."""
        return replace(self, groups=[self.groups[r] for r in rows], relations=[self.relations[r] for r in rows])


def choose_candidates(losses: Tensor, rows: list[int], batch: int) -> Tensor:
    """For each batch item b < ``batch``, the row r with ``rows[r]`` = b whose L (``losses[r]``) is the
    smallest, the first such row on a tie (so an item without rivals keeps its own row b)."""
    best = list(range(batch))
    values = losses.tolist()
    for r in range(batch, len(rows)):
        if values[r] < values[best[rows[r]]]:
            best[rows[r]] = r
    return torch.tensor(best, device=losses.device)


def _attention_maps(model_fn: Callable[[Tensor, Tensor, Tensor], Tensor], unet: torch.nn.Module, z: Tensor,
                    t: Tensor, context: Tensor) -> Tensor:
    """The cross-attention maps float[B, L, h, w] of one conditional pass at z_t (with autograd if z needs it)."""
    recorder = CrossAttentionRecorder(tuple(z.shape[-2:]))
    with recording(unet, recorder):
        model_fn(z, t, context)
    return recorder.mean()


def binding_losses(model_fn: Callable[[Tensor, Tensor, Tensor], Tensor], unet: torch.nn.Module, z_t: Tensor,
                   t: Tensor, context: Tensor, binding: BindingGuidance) -> Tensor:
    """L of each image at z_t: float[B] (one conditional pass, no gradient)."""
    return binding.losses(_attention_maps(model_fn, unet, z_t, t, context)).float()


def binding_denoiser(
    denoise: Denoiser, model_fn: Callable[[Tensor, Tensor, Tensor], Tensor], unet: torch.nn.Module,
    context: Tensor, schedule: NoiseSchedule, binding: BindingGuidance,
) -> Denoiser:
    """``denoise`` with the binding term added at t ≥ t_stop (see the module docstring): ``model_fn`` is
    the UNet as the sampler calls it (z_t, t, context), ``unet`` the module whose cross-attention is read."""
    if len(binding.groups) != context.shape[0]:
        raise ValueError(f"binding has groups for {len(binding.groups)} prompts, the batch has {context.shape[0]}")
    if not binding.binds():
        return denoise  # no prompt names two objects: L = 0, spare the extra pass
    t_stop = round(binding.stop * schedule.num_timesteps)

    def guided(z_t: Tensor, t: Tensor) -> Tensor:
        eps = denoise(z_t, t)
        if binding.scale == 0 or int(t.max()) < t_stop:
            return eps
        # the samplers run without autograd, the pipelines in inference mode: switch both off here
        with torch.inference_mode(False), torch.enable_grad():
            z = z_t.detach().clone().requires_grad_(True)
            loss = binding.losses(_attention_maps(model_fn, unet, z, t.clone(), context.clone())).sum()
            if not loss.requires_grad:  # nothing to bind in any prompt
                return eps
            (grad,) = torch.autograd.grad(loss, z)
        per_image = (-1, *[1] * (z_t.dim() - 1))
        if binding.normalized:
            rms = grad.flatten(1).pow(2).mean(dim=1).sqrt().view(per_image)
            step = grad / rms.clamp_min(torch.finfo(grad.dtype).tiny)  # a zero gradient stays zero
        else:
            step = (1 - schedule.alphas_cumprod.to(z_t.device)[t]).sqrt().view(per_image) * grad
        return eps + binding.scale * step.to(eps.dtype)

    return guided
