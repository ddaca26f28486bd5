"""Does MiniLM's own sentence vector tell unseen wordings apart? For the one-object scenes among the first
300 held-out captions (`ldmkit.eval.heldout`), the mean-pooled MiniLM vector of each caption in the unseen
(and the seen) part of the broad grammar is matched to the nearest template caption of the same scenes
(cosine); printed: how often that neighbour's scene has the same colour and the same shape.

    python experiments/pooled_minilm_probe.py      # unseen: colour 91/153, shape 111/153 (2026-12-04)
"""

import torch

from ldmkit.config import load_preset
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.text.minilm import MiniLMTextEncoder, WordPieceTokenizer

N = 300


def pooled(encoder, tokenizer, captions: list[str]) -> torch.Tensor:
    ids, mask = tokenizer(captions)
    with torch.no_grad():
        h = encoder.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    m = mask[..., None].float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def main() -> None:
    encoder = MiniLMTextEncoder(load_preset("shapes64-minilm").text)
    tokenizer = WordPieceTokenizer.from_package(64)
    templates = heldout_shapes(N, phrasing="templates")
    one = [i for i in range(N) if len(templates.scenes[i].objects) == 1]
    t = pooled(encoder, tokenizer, [templates.captions[i] for i in one])
    for part in ("unseen", "seen"):
        other = heldout_shapes(N, phrasing=part)
        nearest = (pooled(encoder, tokenizer, [other.captions[i] for i in one]) @ t.T).argmax(1).tolist()
        same = [(templates.scenes[one[i]].objects[0], templates.scenes[one[j]].objects[0]) for i, j in enumerate(nearest)]
        print(f"{part}: nearest template caption's colour right {sum(a.color == b.color for a, b in same)}/{len(one)}, "
              f"shape right {sum(a.shape == b.shape for a, b in same)}/{len(one)}")


if __name__ == "__main__":
    main()
