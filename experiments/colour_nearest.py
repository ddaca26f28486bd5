"""Would a colour-name lexicon read held-out colour words better than WordNet? For each colour word of the
shapes grammar's unseen part (and a few a user might write), the known colour words of the shipped model (its
``known_words.json`` object words that the lexicon of `ldmkit.text.colour_words` names) nearest in CIELAB (ΔE76),
beside the colour the grammar means. No images: the reading a lexicon rule would give.

    python experiments/colour_nearest.py
"""

import json
import math

from ldmkit.pretrained import resolve_model
from ldmkit.text.colour_words import lexicon, srgb_to_lab

MEANS = {"scarlet": "red", "amber": "orange", "lemon": "yellow", "lime": "green", "aqua": "cyan", "navy": "blue",
         "lavender": "purple", "ivory": "white"}  # ldmkit.data.shapes_captions, unseen part
OTHERS = ("olive", "beige", "maroon", "salmon", "coral")


def main() -> None:
    names = lexicon()
    objects = json.loads((resolve_model("shapes64") / "known_words.json").read_text())["objects"]
    known = sorted(w for w in objects if " " not in w and w in names)
    print(f"known colour words ({len(known)}): {', '.join(known)}\n")
    print("| word | means here | nearest known colour words (ΔE) |\n|---|---|---|")
    for word in (*MEANS, *OTHERS):
        lab = srgb_to_lab(names[word])
        near = sorted((math.dist(lab, srgb_to_lab(names[k])), k) for k in known)[:3]
        shown = ", ".join(f"{k} ({distance:.1f})" for distance, k in near)
        print(f"| {word} | {MEANS.get(word, '–')} | {shown} |")


if __name__ == "__main__":
    main()
