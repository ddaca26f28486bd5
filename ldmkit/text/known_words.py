"""The words a model was trained on, and prompts read in them: a word it never saw becomes the nearest one it did.

A UNet learns what the words of its training captions look like; a word that never occurred there reaches it only
through the prompt model's vector for it, and a frozen sentence encoder places many such words far from their
meaning (MiniLM reads "navy" as orange: experiments/TEXT_PROBE.md). `KnownWords` records the words of the
training captions (``known_words.json`` in the model folder, written by `ldmkit train`) and rewrites a prompt
before it is encoded:

- the prompt is split into noun phrases by the rule of `ldmkit.text.phrases` (a noun and its modifiers: "a small
  navy tile", "a tile that is navy"); only their words are read, never relation or place words;
- each word of a phrase that the training captions never contained is replaced by its nearest *object word* —
  a noun of the training captions' own noun phrases for a noun, one of their modifiers for a modifier — by
  WordNet (`ldmkit.text.wordnet`: synonyms, then more general words, at most two links up): "a small navy tile"
  → "a small blue block";
- a phrase's noun with no object word above it is read as a noun of the captions that names a kind of it, one
  WordNet link down (`WordNet.narrower`): "a red rectangle" → "a red square", "an oval" → "a circle";
- two neighbouring words that WordNet knows as one compound ("plus sign", "navy blue") are read as one, and
  left as written when no object word is near it;
- a word WordNet does not know, or with no object word near it, is left as written, and so is an inflected
  form of a known word ("circles" where the captions said "circle"), which the prompt model reads as it is;
- a phrase that names no object is left as written: its noun no noun at all (a verb the chunker took for one), or
  a lone adjective without an article among style words ("…, simple, vector"); and no noun is read as one that
  WordNet places above most of the known nouns ("figure", "shape": `KnownWords._noun_targets`);
- then, where a word outside the noun phrases is one the captions never held (a frame, a relation or a place said
  otherwise: "we see …", "… sits higher than …", "in the top half"), or the relation is said in an order they
  never use ("over the circle there is a square", "a square with a circle above it"), the prompt is said again
  in the captions' own phrasing from the chunker's parse — its objects as determiner, modifiers and noun, two of
  them joined by the captions' most used phrase for the relation read between them ("A above B"), one followed by
  theirs for its place ("A at the top") — as long as only closed-class words are lost (`KnownWords.resay`). ``known_words.json``
  records those phrases (``relations``, ``places``); a file written before it did is never said again.

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

from ldmkit.text.phrases import is_determiner, is_function_word, parse_phrases
from ldmkit.text.wordnet import WordNet

FILE = "known_words.json"
DEPTH = 2  # WordNet links walked up from a word never seen
GENERAL_DEPTH = 5  # links up from a known noun within which another known noun counts as more general
GENERAL_SHARE = 0.25  # a known noun more general than this share of the known nouns is not a reading
CAPTIONS_READ = 2000  # training captions whose words a model folder records (`ldmkit train`)
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")  # letters of any script ("café", not "caf"), digits


def _article(before: str, word: str) -> str:
    """``before`` with an indefinite article right before the new word made to fit it ("an aqua" → "a teal")."""
    match = re.search(r"(?:^|(?<=\s))([Aa]n?) $", before)
    if match is None:
        return before
    article = "an" if word[:1].lower() in "aeiou" else "a"
    return before[:match.start(1)] + (article.capitalize() if match.group(1)[0] == "A" else article) + " "


Phrases = dict[str, dict[str, int]]  # what a phrase says ("above", "top") → the phrases saying it → count


class KnownWords:
    """``words``: every word of the training captions (lower case) → how many captions held it; ``objects``: the
    nouns and modifiers of their noun phrases, and each noun with the modifier right before it ("round shape") →
    the same count (what a prompt's words may be rewritten into); ``relations`` and ``places``: the captions'
    relation phrases by relation ({"above": {"above": 310, "over": 95, …}}) and place phrases by side
    ({"top": {"at the top": 120, …}}), what `resay` says a prompt's relation and place in (None: not recorded, as
    in files written before they were, and then prompts are not re-said)."""

    def __init__(self, words: dict[str, int], objects: dict[str, int], relations: Phrases | None = None,
                 places: Phrases | None = None):
        self.words = dict(words)
        self.objects = dict(objects)
        self.relations = relations
        self.places = places
        self._nearest: dict[tuple[str, bool], str | None] = {}
        self._targets: dict[str, int] | None = None  # `_noun_targets`, read once (as `_nearest`, for one WordNet)

    @classmethod
    def from_captions(cls, captions: list[str]) -> "KnownWords":
        words, objects = Counter(), Counter()
        relations: dict[str, Counter] = {}
        places: dict[str, Counter] = {}
        for caption in captions:
            words.update(set(_WORD.findall(caption.lower())))
            found = set()
            parsed = parse_phrases(caption)
            for phrase in parsed.objects:
                spans = sorted((*phrase.modifiers, phrase.noun))
                found |= {caption[a:b].lower() for a, b in spans}
                # a modifier right before its noun, as one name too ("round shape", "five-pointed star")
                found |= {caption[a:phrase.noun[1]].lower() for a, b in spans if caption[b:phrase.noun[0]] == " "}
            objects.update(found)
            for said, into in ((parsed.relations, relations), (parsed.places, places)):
                for s in said:
                    if s.meaning is not None:
                        into.setdefault(s.meaning, Counter())[caption[s.span[0]:s.span[1]].lower()] += 1
        return cls(dict(words), dict(objects), _plain(relations), _plain(places))

    def union(self, other: "KnownWords") -> "KnownWords":
        def merged(a: Phrases | None, b: Phrases | None) -> Phrases | None:
            if a is None or b is None:
                return a if b is None else b
            return _plain({k: Counter(a.get(k, {})) + Counter(b.get(k, {})) for k in {*a, *b}})

        return KnownWords(Counter(self.words) + Counter(other.words), Counter(self.objects) + Counter(other.objects),
                          merged(self.relations, other.relations), merged(self.places, other.places))

    def to_json(self) -> str:
        data: dict = {"words": dict(sorted(self.words.items())), "objects": dict(sorted(self.objects.items()))}
        for key, phrases in (("relations", self.relations), ("places", self.places)):
            if phrases is not None:
                data[key] = {k: dict(sorted(v.items())) for k, v in sorted(phrases.items())}
        return json.dumps(data, indent=0)

    @classmethod
    def from_json(cls, text: str, where: str) -> "KnownWords":
        """The words `to_json` wrote; a ValueError naming ``where`` for anything else."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("words", "objects")) or \
                not all(isinstance(data.get(k, {}), dict) and all(isinstance(v, dict) for v in data.get(k, {}).values())
                        for k in ("relations", "places")):
            raise ValueError(f"{where}: not a known-words list (a JSON object with 'words' and 'objects', and "
                             "optionally 'relations' and 'places' of phrases)")

        def phrases(key: str) -> Phrases | None:
            if key not in data:
                return None
            return {str(k): {str(p): int(n) for p, n in v.items()} for k, v in data[key].items()}

        words = {str(k): int(v) for k, v in data["words"].items()}
        return cls(words, {str(k): int(v) for k, v in data["objects"].items()}, phrases("relations"), phrases("places"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "KnownWords":
        return cls.from_json(Path(path).read_text(encoding="utf-8"), str(path))

    def rewrite(self, prompt: str, wordnet: WordNet) -> str:
        """``prompt`` with each never-seen word of its noun phrases replaced by its nearest object word, then
        re-said in the captions' own phrasing where its other words hold one they never did (`resay`; module
        docstring)."""
        return self.resay(self.read_words(prompt, wordnet), wordnet)

    def read_words(self, prompt: str, wordnet: WordNet) -> str:
        """``prompt`` with each never-seen word of its noun phrases replaced by its nearest object word (module
        docstring); the rest of the text as it was."""
        replacements = []
        for phrase in parse_phrases(prompt).objects:
            if not self._names_an_object(prompt, phrase, wordnet):
                continue
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

    def _names_an_object(self, prompt: str, phrase, wordnet: WordNet) -> bool:
        """Whether a noun phrase names something, so that its words are read: its noun is a word the captions held
        (or an inflection of one), or a noun WordNet knows — not a verb the chunker took for one ("… where a
        square sat way over …": "remember"), nor a lone word without an article that WordNet also knows as an
        adjective, as in a list of style words ("…, simple, vector"), whose noun senses are rarely the ones meant
        ("simple" → "square"; "an oval" is read)."""
        noun = prompt[phrase.noun[0]:phrase.noun[1]]
        if self._known(noun) or any(self._known(f) for f in wordnet.base_forms(noun)):
            return True
        lead = re.search(r"(\S+)\s+$", prompt[:phrase.noun[0]])
        if not phrase.modifiers and not (lead and is_determiner(lead.group(1).lower())) and wordnet.is_adjective(noun):
            return False
        return wordnet.is_noun(noun)

    def resay(self, prompt: str, wordnet: WordNet | None = None) -> str:
        """``prompt`` said again in the training captions' phrasing when a word outside its noun phrases is one they
        never held ("we see a red circle sitting higher than a square that is blue" → "a red circle above a blue
        square"), or its relation is said in an order they never use (before both objects, pointing back: "over
        the circle there is a square", "a square with a circle above it"), as it was otherwise.

        It is said again only when nothing but structure is lost: one object, or two with the relation the chunker
        reads between them (`ldmkit.text.phrases`); every word outside the objects and their place phrases of a
        closed class (`is_function_word`: articles, prepositions, verbs of placing and seeing …); each place on
        one side; the captions holding a phrase for the relation or the place; and, given ``wordnet``, each
        object's noun a word they held or a noun WordNet knows (not a verb read as a noun: "I remember …"). Each
        object is said as its determiner, modifiers and noun in that order ("a square that is blue" → "a blue
        square"); two objects as "A {relation} B", one as "A {place}", in the phrase the captions used most for
        that relation or side."""
        if self.relations is None or self.places is None:
            return prompt
        parsed = parse_phrases(prompt)
        if not 1 <= len(parsed.objects) <= 2 or (len(parsed.objects) == 2 and parsed.relation is None):
            return prompt
        in_objects = [span for o in parsed.objects for span in (*o.modifiers, o.noun)]
        in_places = [p.span for p in parsed.places]
        outside = [m for m in _WORD.finditer(prompt) if not _within(m.span(), in_objects)]
        if all(m.group().lower() in self.words for m in outside) and parsed.plain:
            return prompt
        if not all(is_function_word(m.group().lower()) for m in outside if not _within(m.span(), in_places)):
            return prompt
        if wordnet is not None and not all(self._names_an_object(prompt, o, wordnet) for o in parsed.objects):
            return prompt
        if len(parsed.objects) == 2:
            link = _most(self.relations.get(parsed.relation or "", {}))
            if link is None:
                return prompt
            return f"{self._said(prompt, parsed.objects[0])} {link} {self._said(prompt, parsed.objects[1])}"
        sides = {p.meaning for p in parsed.places}
        if None in sides or len(sides) > 1:
            return prompt
        if not sides:
            return self._said(prompt, parsed.objects[0])
        place = _most(self.places.get(sides.pop() or "", {}))
        return prompt if place is None else f"{self._said(prompt, parsed.objects[0])} {place}"

    @staticmethod
    def _said(prompt: str, phrase) -> str:
        """A noun phrase as its determiner (the word right before it, if one), modifiers and noun; the modifiers said
        after the noun come first ("a petite plus sign of red colour" → "a red petite plus sign"), so that those
        before it keep their place, a compound's first word next to its noun."""
        first = min(a for a, _ in (*phrase.modifiers, phrase.noun))
        after = sorted(m for m in phrase.modifiers if m[0] > phrase.noun[0])
        before = sorted(m for m in phrase.modifiers if m[0] < phrase.noun[0])
        words = [prompt[a:b] for a, b in (*after, *before, phrase.noun)]
        lead = re.search(r"(\S+)\s+$", prompt[:first])
        if lead is None or not is_determiner(lead.group(1).lower()):
            return " ".join(words)
        article = lead.group(1)
        if article.lower() in ("a", "an"):  # fitted to the first word said, lower case (the prompt's start moved)
            article = _article(article.lower() + " ", words[0]).rstrip()
        return " ".join([article, *words])

    def knows(self, prompt: str) -> bool:
        """Whether every word of ``prompt`` occurred in the training captions (then `rewrite` leaves it as it is)."""
        return self._known(prompt)

    def _known(self, text: str) -> bool:
        return all(w in self.words for w in _WORD.findall(text.lower()))

    def reading(self, text: str, wordnet: WordNet, noun: bool = False) -> str | None:
        """The object word a never-seen word (or compound) ``text`` is read as, None for as written: its nearest by
        upward links among the words seen in its role — a known noun for the phrase's ``noun``, a known modifier
        for a modifier ("single" is never read as the noun "figure", nor "flat" as "box"); failing that, where it is
        the phrase's noun, a known noun that names a kind of it (`WordNet.narrower`: "rectangle" → "square"). A
        number ("3", "1.5", "2nd") is read as written: WordNet holds digits as nouns ("3" → "figure"), but a number
        says how many or which, not what."""
        if any(c.isdigit() for c in text):
            return None
        key = (text.lower(), noun)
        if key not in self._nearest:
            near = wordnet.nearest(key[0], self._noun_targets(wordnet) if noun else self._modifiers, DEPTH)
            if near is None and noun:
                near = wordnet.narrower(key[0], self._nouns)
            self._nearest[key] = near
        return self._nearest[key]

    @functools.cached_property
    def _parts(self) -> tuple[dict[str, int], dict[str, int]]:
        """The object words seen as a modifier and as a phrase's noun: the two parts of each modifier–noun name
        ("blue circle": blue, circle), with their counts."""
        modifiers: Counter = Counter()
        nouns: Counter = Counter()
        for name, count in self.objects.items():
            if " " in name:
                modifier, noun = name.rsplit(" ", 1)
                modifiers[modifier] += count
                nouns[noun] += count
        return dict(modifiers), dict(nouns)

    @property
    def _nouns(self) -> dict[str, int]:
        """The object words seen as a phrase's noun."""
        return self._parts[1]

    @property
    def _modifiers(self) -> dict[str, int]:
        """The object words seen as a modifier."""
        return self._parts[0]

    def _noun_targets(self, wordnet: WordNet) -> dict[str, int]:
        """The noun names a phrase's noun may be read as (`_noun_names`), less those WordNet places above more than
        `GENERAL_SHARE` of the known nouns ("figure", "shape": above "circle", "square", "star" …), which name no
        object in particular ("colors" would become "figure")."""
        if self._targets is None:
            nouns = self._noun_names

            def above(n: str) -> int:
                return sum(m != n and wordnet.nearest(m, {n: 1}, 0) is None
                           and wordnet.nearest(m, {n: 1}, GENERAL_DEPTH) == n for m in self._nouns)
            general = {n for n in nouns if above(n) > GENERAL_SHARE * len(self._nouns)}
            self._targets = {n: c for n, c in nouns.items() if n not in general}
        return self._targets

    @functools.cached_property
    def _noun_names(self) -> dict[str, int]:
        """What a phrase's noun may be read as: every object word and name but those seen only as a modifier."""
        nouns, modifiers = self._nouns, self._modifiers
        return {name: count for name, count in self.objects.items() if name in nouns or name not in modifiers}


def _within(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(a <= span[0] and span[1] <= b for a, b in spans)


def _most(phrases: dict[str, int]) -> str | None:
    """The phrase seen most often (the shorter, then the first in order, on a tie); None for none."""
    return min(phrases, key=lambda p: (-phrases[p], len(p), p)) if phrases else None


def _plain(phrases: dict[str, Counter]) -> Phrases:
    return {k: dict(v) for k, v in phrases.items()}
