"""`ldmkit finetune`: LoRA, textual inversion or full fine-tuning of a text model on a few captioned images."""

from __future__ import annotations

from ldmkit.cli.common import (
    UsageError, bounded_float, bounded_int, non_negative_float, non_negative_int, positive_int, seed_int,
)
from ldmkit.cli.outputs import check_output_dir
from ldmkit.pretrained import DEFAULT, resolve_model
from ldmkit.convert.lora import TARGETS as LORA_TARGETS
from ldmkit.train.common import LR_SCHEDULES
from ldmkit.train.finetune import (
    METHODS, SAVE_DTYPES, TIMESTEP_BIAS_SCOPES, TIMESTEP_BIASES, FinetuneConfig, finetune, settings_from,
)

MAX_BATCH = 256  # images per fine-tuning step: memory grows with it


def cmd_finetune(args) -> None:
    fresh = args.resume is None
    # A fresh run needs a new or empty --out: the result files of two runs must not mix.
    check_output_dir(args.out, empty=fresh, what="fine-tuning results",
                     remedy="choose a new folder, or continue the run there with --resume")
    if args.rank is not None and args.method != "lora":
        raise UsageError(f"--rank applies to --method lora, not {args.method}")
    if (args.num_vectors is not None or args.init_word is not None) and not args.token:
        raise UsageError("--num-vectors and --init-word shape the vectors of a new word: they need --token")
    cfg = settings_from(
        FinetuneConfig(method=args.method), rank=args.rank, alpha=args.alpha, token=args.token,
        init_word=args.init_word, num_vectors=args.num_vectors, embedding_lr=args.embedding_lr, prompt=args.prompt,
        loraplus_lr_ratio=args.loraplus_lr_ratio,
        steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, lr_scheduler=args.lr_scheduler, warmup_steps=args.lr_warmup_steps,
        seed=args.seed,
        sample_every=args.sample_every, checkpoint_every=args.checkpoint_every, layout=args.layout,
        sample_prompts=tuple(args.sample_prompt) if args.sample_prompt else None,
        text_encoder_lora=True if args.text_encoder else None, lora_targets=args.lora_targets,
        save_dtype=args.save_dtype, prior_images=args.prior_images,
        prior_prompts=tuple(args.prior_prompt) if args.prior_prompt else None, prior_loss=args.prior_loss,
        prior_loss_weight=args.prior_loss_weight,
        timestep_bias=args.timestep_bias, timestep_bias_multiplier=args.timestep_bias_multiplier,
        timestep_bias_portion=args.timestep_bias_portion, timestep_bias_scope=args.timestep_bias_scope,
        cond_drop_prob=args.caption_dropout_rate,
        flip_aug=True if args.flip_aug else None,
    )
    written = finetune(resolve_model(args.model), args.images, args.out, cfg,
                       resume=False if fresh else args.resume, device=args.device, progress=not args.no_progress)
    print(f"wrote {', '.join(str(p) for p in written)} (samples in {args.out}/samples)")
    model = args.model or DEFAULT
    if args.method == "lora" and cfg.token:
        print(f"use them together with `ldmkit generate --model {model} --lora {written[0]} --embedding {written[1]} "
              f"\"... {cfg.token} ...\"`")
    elif args.method == "lora":
        print(f"use it with `ldmkit generate --model {model} --lora {written[0]} PROMPT`")
    elif args.method == "textual-inversion":
        print(f"use it with `ldmkit generate --model {model} --embedding {written[0]} \"... {cfg.token} ...\"`")


def add_parsers(sub) -> None:
    p = sub.add_parser("finetune", help="teach a text model a new concept: LoRA, textual inversion or full")
    p.add_argument("--model", help="the text model to fine-tune (default: shapes64-grounded, the shipped one; a model folder, "
                                   "an SD single file or a diffusers folder)")
    p.add_argument("--images", required=True, help="a folder of images, each with a caption in a sidecar .txt "
                                                   "(or metadata.jsonl); --prompt captions the others")
    p.add_argument("--out", required=True, help="the output folder (new or empty, unless --resume)")
    p.add_argument("--method", choices=METHODS, default="lora")
    p.add_argument("--rank", type=positive_int, help="LoRA rank r (default 8)")
    p.add_argument("--alpha", type=bounded_float(1e6, "LoRA alpha"), help="LoRA alpha α (default: r, so α/r = 1)")
    p.add_argument("--text-encoder", action="store_true", help="LoRA on a CLIP text encoder's attention too")
    p.add_argument("--lora-targets", choices=LORA_TARGETS,
                   help="the UNet layers LoRA adapts: attention (default: W_Q, W_K, W_V, W_out of every attention "
                        "layer) or attention+conv (and the two 3×3 convolutions of every ResBlock, as kohya's "
                        "LoCon: for what the model draws, not only where)")
    p.add_argument("--save-dtype", choices=tuple(SAVE_DTYPES),
                   help="the LoRA file's tensors (default float32; float16 halves the file)")
    p.add_argument("--token", help="the new word, e.g. \"<hexagon>\" (not in the vocabulary), whose vectors are "
                                   "learned: textual inversion's, or with --method lora pivotal tuning (the word's "
                                   "vectors and the adapters together, saved as an embedding beside the LoRA)")
    p.add_argument("--init-word", help="--token: start the token's vectors from this word's "
                                       "(default: the token without brackets)")
    p.add_argument("--num-vectors", type=positive_int, help="--token: vectors per token (default 1)")
    p.add_argument("--embedding-lr", type=non_negative_float, metavar="LR",
                   help="pivotal tuning (--method lora --token): the token vectors' learning rate (default 5e-3, "
                        "textual inversion's); the --lr-scheduler shapes it as --lr")
    p.add_argument("--loraplus-lr-ratio", type=non_negative_float, metavar="RATIO",
                   help="--method lora: train each adapter's B at RATIO times --lr, its A at --lr (LoRA+, as peft's "
                        "and kohya's loraplus_lr_ratio; default 1)")
    p.add_argument("--prompt", help="the caption of every image without one, e.g. \"a photo of <hexagon>\"")
    p.add_argument("--prior-images", type=positive_int, metavar="N",
                   help="prior preservation (DreamBooth): the model first draws N images of the --prior-prompt "
                        "captions, then trains on them beside --images (half of each batch), so that it keeps drawing "
                        "those as before")
    p.add_argument("--prior-loss", choices=("images", "model"),
                   help="the prior half's target: images (DreamBooth: the noise, as for --images; the default) or "
                        "model (the frozen model's own prediction, the LoRA switched off: it keeps what the model "
                        "drew for the prior prompts at every noise level; --method lora)")
    p.add_argument("--prior-loss-weight", type=bounded_float(1e3, "--prior-loss-weight"), metavar="λ",
                   help="the prior half's weight in the loss (DreamBooth's prior_loss_weight; default 1): more keeps "
                        "what the model drew for the prior prompts, less learns the new images faster")
    p.add_argument("--caption-dropout-rate", type=bounded_float(1.0, "--caption-dropout-rate"), metavar="P",
                   help="the share of captions trained as the empty one, for classifier-free guidance (default 0.1)")
    p.add_argument("--flip-aug", action="store_true",
                   help="train on each image's mirror image too, its caption's \"left\" and \"right\" swapped "
                        "(kohya's --flip_aug; leave it off for images whose text or asymmetry must stay)")
    p.add_argument("--prior-prompt", action="append", metavar="TEXT",
                   help="a caption of the prior images (repeatable; cycled), e.g. \"a red square\" when "
                        "teaching a shape")
    p.add_argument("--steps", type=positive_int, help="optimizer steps (default 500)")
    p.add_argument("--timestep-bias", choices=TIMESTEP_BIASES,
                   help="draw training timesteps more often near t = 0 (earlier: the low-noise steps that draw "
                        "edges and corners) or near T (later: composition); default none (uniform)")
    p.add_argument("--timestep-bias-multiplier", type=bounded_float(1e3, "--timestep-bias-multiplier"),
                   metavar="X", help="how many times as likely the biased timesteps are (default 1)")
    p.add_argument("--timestep-bias-portion", type=bounded_float(1.0, "--timestep-bias-portion"), metavar="P",
                   help="the share of the timesteps the bias covers (default 0.25)")
    p.add_argument("--timestep-bias-scope", choices=TIMESTEP_BIAS_SCOPES,
                   help="the rows the bias draws: all (the default) or new (the --images only; the prior images "
                        "keep uniform timesteps, so that they hold the model at every noise level alike)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH, "memory grows with the batch"),
                   help="images per step (default 4)")
    p.add_argument("--lr", type=non_negative_float, help="learning rate (default: lora 5e-4, textual-inversion 5e-3, "
                                                         "full 2e-5)")
    p.add_argument("--lr-scheduler", choices=LR_SCHEDULES,
                   help="the learning rate over the run: constant (the default), linear or cosine (both decay "
                        "to 0 at --steps; a resumed run with more --steps stretches the rest of the decay)")
    p.add_argument("--lr-warmup-steps", type=non_negative_int, metavar="N",
                   help="raise the learning rate linearly from 0 over the first N steps (default 0), as diffusers' "
                        "--lr_warmup_steps: the adapters' first steps from B = 0 at a high rate are the unsteady ones")
    p.add_argument("--seed", type=seed_int, help="the run's seed: the adapters' start, the batch order and the noise "
                                                 "(default 0)")
    p.add_argument("--sample-prompt", action="append", metavar="PROMPT",
                   help="a prompt of the sample grids (repeatable; default: the first 4 captions)")
    p.add_argument("--sample-every", type=positive_int, metavar="N", help="a sample grid every N steps (default 100)")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="a checkpoint every N steps (default 100)")
    p.add_argument("--layout", choices=("diffusers", "kohya"),
                   help="the LoRA file's key layout (default diffusers: what diffusers' load_lora_weights and "
                        "peft read)")
    p.add_argument("--resume", nargs="?", const="auto", metavar="auto|PATH",
                   help="continue a run in --out from its newest checkpoint (or PATH), exactly as if uninterrupted")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)
