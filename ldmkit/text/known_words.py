"""The words a model was trained on, and prompts read in them: a word it never saw becomes the nearest one it did.

A UNet learns what the words of its training captions look like; a word that never occurred there reaches it only
through the prompt model's vector for it, and a frozen sentence encoder places many such words far from their
meaning (MiniLM reads "navy" as orange: experiments/TEXT_PROBE.md). `KnownWords` records the words of the
training captions (``known_words.json`` in the model folder, written by `ldmkit train`) and rewrites a prompt
before it is encoded:

- the prompt is split into noun phrases by the rule of `ldmkit.text.phrases` (a noun and its modifiers: "a small
  navy tile", "a tile that is navy"); only their words are read, never relation or place words;
- each word of a phrase that the training captions never contained is replaced by its nearest *object word* —
  a noun or modifier of the training captions' own noun phrases — by WordNet (`ldmkit.text.wordnet`: synonyms,
  then more general words, at most two links up): "a small navy tile" → "a small blue block";
- a phrase's noun with no object word above it is read as a noun of the captions that names a kind of it, one
  WordNet link down (`WordNet.narrower`): "a red rectangle" → "a red square", "an oval" → "a circle";
- two neighbouring words that WordNet knows as one compound ("plus sign", "navy blue") are read as one, and
  left as written when no object word is near it;
- a word WordNet does not know, or with no object word near it, is left as written, and so is an inflected
  form of a known word ("circles" where the captions said "circle"), which the prompt model reads as it is.

A prompt in words the model knows is unchanged, character for character. The rewrite is what the pipelines
encode (`LatentDiffusion.in_known_words`; Prompt-to-Prompt excepted, whose edits name the prompts' own words), so
binding guidance's token groups and the images follow it. Without WordNet installed (``pip install
'ldmkit[words]'``) prompts are encoded as written.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import Path

from ldmkit.text.phrases import parse_phrases
from ldmkit.text.wordnet import WordNet

FILE = "known_words.json"
DEPTH = 2  # WordNet links walked up from a word never seen
CAPTIONS_READ = 2000  # training captions whose words a model folder records (`ldmkit train`)
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")  # letters of any script ("café", not "caf"), digits


def _article(before: str, word: str) -> str:
    """``before`` with an indefinite article right before the new word made to fit it ("an aqua" → "a teal")."""
    match = re.search(r"(?:^|(?<=\s))([Aa]n?) $", before)
    if match is None:
        return before
    article = "an" if word[:1].lower() in "aeiou" else "a"
    return before[:match.start(1)] + (article.capitalize() if match.group(1)[0] == "A" else article) + " "


class KnownWords:
    """``words``: every word of the training captions (lower case) → how many captions held it; ``objects``: the
    nouns and modifiers of their noun phrases, and each noun with the modifier right before it ("round shape") →
    the same count (what a prompt's words may be rewritten into)."""

    def __init__(self, words: dict[str, int], objects: dict[str, int]):
        self.words = dict(words)
        self.objects = dict(objects)
        self._nearest: dict[tuple[str, bool], str | None] = {}

    @classmethod
    def from_captions(cls, captions: list[str]) -> "KnownWords":
        words, objects = Counter(), Counter()
        for caption in captions:
            words.update(set(_WORD.findall(caption.lower())))
            found = set()
            for phrase in parse_phrases(caption).objects:
                spans = sorted((*phrase.modifiers, phrase.noun))
                found |= {caption[a:b].lower() for a, b in spans}
                # a modifier right before its noun, as one name too ("round shape", "five-pointed star")
                found |= {caption[a:phrase.noun[1]].lower() for a, b in spans if caption[b:phrase.noun[0]] == " "}
            objects.update(found)
        return cls(dict(words), dict(objects))

    def union(self, other: "KnownWords") -> "KnownWords":
        return KnownWords(Counter(self.words) + Counter(other.words), Counter(self.objects) + Counter(other.objects))

    def to_json(self) -> str:
        return json.dumps({"words": dict(sorted(self.words.items())), "objects": dict(sorted(self.objects.items()))},
                          indent=0)

    @classmethod
    def from_json(cls, text: str, where: str) -> "KnownWords":
        """The words `to_json` wrote; a ValueError naming ``where`` for anything else."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("words", "objects")):
            raise ValueError(f"{where}: not a known-words list (a JSON object with 'words' and 'objects')")
        return cls({str(k): int(v) for k, v in data["words"].items()}, {str(k): int(v) for k, v in data["objects"].items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "KnownWords":
        return cls.from_json(Path(path).read_text(encoding="utf-8"), str(path))

    def rewrite(self, prompt: str, wordnet: WordNet) -> str:
        """``prompt`` with each never-seen word of its noun phrases replaced by its nearest object word (module
        docstring); the rest of the text as it was."""
        replacements = []
        for phrase in parse_phrases(prompt).objects:
            spans = sorted((*phrase.modifiers, phrase.noun))
            i = 0
            while i < len(spans):
                a, b = spans[i]
                if i + 1 < len(spans) and prompt[b:spans[i + 1][0]] == " ":
                    pair = prompt[a:spans[i + 1][1]]
                    if wordnet.lemmas(pair) and not self._known(pair):  # a compound WordNet knows: one unit
                        replacements.append((a, spans[i + 1][1],
                                             self.reading(pair, wordnet, spans[i + 1] == phrase.noun)))
                        i += 2
                        continue
                word = prompt[a:b]
                if not self._known(word) and not any(self._known(f) for f in wordnet.base_forms(word)):
                    # (an inflection of a known word stays)
                    replacements.append((a, b, self.reading(word, wordnet, spans[i] == phrase.noun)))
                i += 1
        for a, b, word in sorted(replacements, reverse=True):
            if word is not None:
                word = word[:1].upper() + word[1:] if prompt[a].isupper() else word  # "Scarlet circle" → "Red circle"
                prompt = _article(prompt[:a], word) + word + prompt[b:]
        return prompt

    def knows(self, prompt: str) -> bool:
        """Whether every word of ``prompt`` occurred in the training captions (then `rewrite` leaves it as it is)."""
        return self._known(prompt)

    def _known(self, text: str) -> bool:
        return all(w in self.words for w in _WORD.findall(text.lower()))

    def reading(self, text: str, wordnet: WordNet, noun: bool = False) -> str | None:
        """The object word a never-seen word (or compound) ``text`` is read as, None for as written: its nearest by
        upward links; failing that, where it is the phrase's ``noun``, a known noun that names a kind of it
        (`WordNet.narrower`: "rectangle" → "square"). A number ("3", "1.5", "2nd") is read as written: WordNet
        holds digits as nouns ("3" → "figure"), but a number says how many or which, not what."""
        if any(c.isdigit() for c in text):
            return None
        key = (text.lower(), noun)
        if key not in self._nearest:
            near = wordnet.nearest(key[0], self.objects, DEPTH)
            if near is None and noun:
                near = wordnet.narrower(key[0], self._nouns)
            self._nearest[key] = near
        return self._nearest[key]

    @functools.cached_property
    def _nouns(self) -> dict[str, int]:
        """The object words seen as a phrase's noun: the last word of each modifier–noun name ("blue circle")."""
        nouns: Counter = Counter()
        for name, count in self.objects.items():
            if " " in name:
                nouns[name.rsplit(" ", 1)[1]] += count
        return dict(nouns)
