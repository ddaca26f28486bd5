"""The words a model was trained on, and prompts read in them: a word it never saw becomes the nearest one it did.

A UNet learns what the words of its training captions look like; a word that never occurred there reaches it only
through the prompt model's vector for it, and a frozen sentence encoder places many such words far from their
meaning (MiniLM reads "navy" as orange: experiments/TEXT_PROBE.md). `KnownWords` records the words of the
training captions (``known_words.json`` in the model folder, written by `ldmkit train`) and rewrites a prompt
before it is encoded:

- before all, pictographs are left out, and a file name is read as its words, a position in numbers as its place
  and shorthand in full (`ldmkit.text.positions`: "red_star_left.png", "at x=0.15, y=0.5" → "on the left",
  "@ btm" → "at bottom"), and a prompt written as data (JSON, YAML, a markdown table) as a sentence
  (`ldmkit.text.structured`: "shape: circle, color: red, position: top" → "a red circle at the top");
- first, a misspelt word — one that neither the captions, nor WordNet, nor the closed-class words, nor the colour
  lexicon hold — is read as the word it was meant as, one edit away (`KnownWords.meant`: "a red cirlce abvoe
  a blue sqaure" → "a red circle above a blue square");
- an object named by order, by a modifier or by its side ("the first one", "the latter", "the red one", "the
  lower one") is named by its own words (`ldmkit.text.phrases.resolve_references`);
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
- first of all, where the training images showed which colour each colour word names (``colours``: grounding
  targets, `ldmkit.data.dataset.dataset_word_colours`), a colour name of a phrase's modifiers that the captions
  never held, found in the colour lexicon of `ldmkit.text.colour_words` ("lime", "sky blue", "amber"), is read
  as the word they drew nearest to its colour (`KnownWords.colour_reading`), not by WordNet, which knows few
  colours as colours ("lime" is a fruit there, "amber" a yellow);
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
  records those phrases (``relations``, ``places``); a file written before it did is never said again;
- a prompt with words the captions never held that cannot be said again so is said again, if it then can be,
  without what names nothing the model draws (`KnownWords._drawn_part`): parts between clause marks with no
  object word and no place ("…, minimal, flat design, 8k", "Alt text: …", "for the poster, …"), and, among more
  than two objects or two without a relation, noun phrases with no object word ("my daughter wants a picture of
  …"); never one of two objects a relation joins.

A prompt in the captions' words and phrasing is unchanged, character for character (one in their words but not
their phrasing, "red square top", is said again: `KnownWords.resay`). The rewrite is what the pipelines
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

from ldmkit.text.colour_words import colour_difference, find_colour_names, lexicon, srgb_to_lab
from ldmkit.text.phrases import (NounPhrase, clock_places, drop_corrections, is_determiner, is_function_word,
                                 names_a_side, parse_phrases, resolve_references, says_where)
from ldmkit.text.positions import (file_words, number_places, shorthand, side_compounds, without_north_up,
                                   without_symbols)
from ldmkit.text.spelling import CLOSED_CLASS, distance, edits
from ldmkit.text.structured import as_sentence
from ldmkit.text.wordnet import WordNet

FILE = "known_words.json"
DEPTH = 2  # WordNet links walked up from a word never seen
GENERAL_DEPTH = 5  # links up from a known noun within which another known noun counts as more general
GENERAL_SHARE = 0.25  # a known noun more general than this share of the known nouns is not a reading
CAPTIONS_READ = 2000  # training captions whose words a model folder records (`ldmkit train`)
LIGHTNESS_WEIGHT = 2.0  # k_L of the CIEDE2000 difference by which a colour name is read (`KnownWords.colour_reading`)
FARTHEST_COLOUR = 25.0  # ΔE₀₀ beyond which no colour the model draws stands for a colour name ("black", here)
SAME_COLOUR = 2.3  # ΔE₀₀ within which two drawn colours are one (about a just-noticeable difference)
SHORTEST_MISSPELT = 3  # letters of the shortest word read as misspelt (`KnownWords.meant`)
TWO_EDITS = 7  # letters from which a word may be two edits from a caption word it was meant as
OTHER_ENGLISH = 6  # letters from which a word may be meant as an English word the captions never held
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")  # letters of any script ("café", not "caf"), digits
_LOWER = re.compile(r"[a-z]+")  # a word of plain letters, the only kind `KnownWords.meant` reads
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
# A1111's emphasis, innermost first (`KnownWords.rewrite`): "(words:1.3)", "((words))", "[words]"
_EMPHASIS = re.compile(r"\(([^()]*?)\s*:\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*\)|\(\(([^()]*)\)\)|\[([^\[\]]*)\]")
_HASHTAG = re.compile(r"(?<![\w#])#(?![0-9a-fA-F]{6}\b)[^\W\d_]\w*")  # a hashtag; not a colour ("#ff0000")
# A side, then "of" at the end of a text: the place that an object of no object word left out followed
_SIDE_OF = re.compile(r"\b(?:left|right|top|bottom|middle|centre|center)(?:\s+(?:side|half|edge|part|corner|end))?"
                      r"(\s+of\s*)$", re.IGNORECASE)
_PARTS = re.compile(r"([,;:!?|/—–]|\.(?!\d)|\s-\s)")  # what sets a prompt's parts apart (`KnownWords._drawn_part`)


def _article(before: str, word: str) -> str:
    """``before`` with an indefinite article right before the new word made to fit it ("an aqua" → "a teal")."""
    match = re.search(r"(?:^|(?<=\s))([Aa]n?) $", before)
    if match is None:
        return before
    article = "an" if word[:1].lower() in "aeiou" else "a"
    return before[:match.start(1)] + (article.capitalize() if match.group(1)[0] == "A" else article) + " "


def _determiner_before(text: str, start: int) -> re.Match | None:
    """The word right before ``start`` in ``text`` (group 1) where it is a determiner ("a", "the", "my" …), else None."""
    lead = re.search(r"(\S+)\s+$", text[:start])
    return lead if lead is not None and is_determiner(lead.group(1).lower()) else None


Phrases = dict[str, dict[str, int]]  # what a phrase says ("above", "top") → the phrases saying it → count


class KnownWords:
    """``words``: every word of the training captions (lower case) → how many captions held it; ``objects``: the
    nouns and modifiers of their noun phrases, and each noun with the modifier right before it ("round shape") →
    the same count (what a prompt's words may be rewritten into); ``relations`` and ``places``: the captions'
    relation phrases by relation ({"above": {"above": 310, "over": 95, …}}) and place phrases by side
    ({"top": {"at the top": 120, …}}), what `resay` says a prompt's relation and place in (None: not recorded, as
    in files written before they were, and then prompts are not re-said); ``colours``: the words that name a
    colour in the training images → that colour, sRGB in [0, 1]³ (`ldmkit.data.dataset.dataset_word_colours`; empty
    where the data has no grounding targets), what `colour_reading` reads a never-seen colour name as."""

    def __init__(self, words: dict[str, int], objects: dict[str, int], relations: Phrases | None = None,
                 places: Phrases | None = None, colours: dict[str, tuple[float, float, float]] | None = None):
        self.words = dict(words)
        self.objects = dict(objects)
        self.relations = relations
        self.places = places
        self.colours = dict(colours or {})
        self._nearest: dict[tuple[str, bool], str | None] = {}
        self._meant: dict[str, str | None] = {}  # `meant`, read once per word
        self._targets: dict[str, int] | None = None  # `_noun_targets`, read once (as `_nearest`, for one WordNet)

    @classmethod
    def from_captions(cls, captions: list[str], colours: dict[str, tuple[float, float, float]] | None = None
                      ) -> "KnownWords":
        """The words of ``captions``, their object words and relation and place phrases, and ``colours`` (the
        colours the words name in their images, `ldmkit.data.dataset.dataset_word_colours`)."""
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
        return cls(dict(words), dict(objects), _plain(relations), _plain(places), colours)

    def union(self, other: "KnownWords") -> "KnownWords":
        def merged(a: Phrases | None, b: Phrases | None) -> Phrases | None:
            if a is None or b is None:
                return a if b is None else b
            return _plain({k: Counter(a.get(k, {})) + Counter(b.get(k, {})) for k in {*a, *b}})

        return KnownWords(Counter(self.words) + Counter(other.words), Counter(self.objects) + Counter(other.objects),
                          merged(self.relations, other.relations), merged(self.places, other.places),
                          {**other.colours, **self.colours})

    def to_json(self) -> str:
        data: dict = {"words": dict(sorted(self.words.items())), "objects": dict(sorted(self.objects.items()))}
        for key, phrases in (("relations", self.relations), ("places", self.places)):
            if phrases is not None:
                data[key] = {k: dict(sorted(v.items())) for k, v in sorted(phrases.items())}
        if self.colours:
            data["colours"] = {w: "#" + "".join(f"{round(c * 255):02x}" for c in rgb)
                               for w, rgb in sorted(self.colours.items())}
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
                             "optionally 'relations' and 'places' of phrases and 'colours')")
        colours = data.get("colours", {})
        if not isinstance(colours, dict) or not all(isinstance(v, str) and _HEX.fullmatch(v) for v in colours.values()):
            raise ValueError(f"{where}: 'colours' must map words to colours written #rrggbb")

        def phrases(key: str) -> Phrases | None:
            if key not in data:
                return None
            return {str(k): {str(p): int(n) for p, n in v.items()} for k, v in data[key].items()}

        words = {str(k): int(v) for k, v in data["words"].items()}
        return cls(words, {str(k): int(v) for k, v in data["objects"].items()}, phrases("relations"), phrases("places"),
                   {str(w): tuple(int(v[i:i + 2], 16) / 255 for i in (1, 3, 5)) for w, v in colours.items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "KnownWords":
        return cls.from_json(Path(path).read_text(encoding="utf-8"), str(path))

    def rewrite(self, prompt: str, wordnet: WordNet) -> str:
        """``prompt`` with its misspelt words read as the words meant (`spelled`), a clock's hour said as its side
        ("at six o'clock" → "at the bottom": `ldmkit.text.phrases.clock_places`), a place or relation taken back
        dropped ("on the left no wait the right" → "the right": `drop_corrections`), an object named by order,
        modifier or side named by its own words (`resolve_references`: "the first one" → "the red circle"), each
        never-seen word of its noun phrases replaced by its nearest object word, then re-said in the captions' own
        phrasing where its other words hold one they never did (`resay`; module docstring). AUTOMATIC1111's
        emphasis syntax ("(red circle:1.3)", "((red circle))", "[red circle]": `ldmkit.text.emphasis`), which a
        prompt read as written takes as text, is read without its brackets and weights; a pair of round brackets
        as prose uses them stays ("a square (lower)"); hashtags ("#aiart") name a post's topics and are left out,
        as are pictographs ("✨", "👉") and a map's "north up"; a file name is read as words ("red_star_left.png"), a
        position in numbers as its place ("at x=0.15, y=0.5" → "on the left"), shorthand in full ("@ btm"), a side
        with the middle as that side ("bottom-middle": `ldmkit.text.positions`), and a prompt written as data as a
        sentence (`ldmkit.text.structured`)."""
        before = None
        while before != prompt:
            before, prompt = prompt, _EMPHASIS.sub(lambda m: next(g for g in m.groups() if g is not None), prompt)
        prompt = _HASHTAG.sub("", prompt).strip() or prompt  # "#aiart", "#minimal": a post's topics, not its objects
        prompt = as_sentence(side_compounds(without_north_up(shorthand(without_symbols(prompt)))))
        prompt = number_places(file_words(prompt))
        prompt = resolve_references(drop_corrections(clock_places(self.spelled(prompt, wordnet))))
        return self.resay(self.read_words(prompt, wordnet), wordnet)

    def spelled(self, prompt: str, wordnet: WordNet) -> str:
        """``prompt`` with each misspelt word replaced by the word it was meant as (`meant`: "a red cirlce abvoe
        a blue sqaure" → "a red circle above a blue square"), a capital first letter kept; the rest as written."""
        text, end = "", 0
        for match in _WORD.finditer(prompt):
            word = match.group()
            fixed = None if len(word) > 1 and word.isupper() else self.meant(word.lower(), wordnet)  # not "HDR"
            if fixed is not None:
                fixed = fixed[:1].upper() + fixed[1:] if word[0].isupper() else fixed
                text, end = _article(text + prompt[end:match.start()], fixed) + fixed, match.end()
        return text + prompt[end:]

    def meant(self, word: str, wordnet: WordNet) -> str | None:
        """The word a misspelt ``word`` (lower case) was meant as, None where it is spelt right or no one word is
        near enough. Spelt right: a word of the training captions, a word the chunker reads as structure, an English
        word (WordNet's, in any part of speech, or a closed-class one: `ldmkit.text.spelling.CLOSED_CLASS`) or a
        colour name of the lexicon; only words of `SHORTEST_MISSPELT` or more plain letters a–z are read. Meant,
        in this order:

        1. the caption word (or the plural of one) or structure word one edit away (`ldmkit.text.spelling.
           edits`: "cirlce" → "circle", "circels" → "circles", "abvoe" → "above"), the one the captions held most
           where several are, a caption word itself before an inflection ("smalll": small, not smalls); for a word
           of three letters a caption word only ("blu" → "blue"; "hdr" is left as written, not read as "her");
        2. for a word of `TWO_EDITS` letters or more, the caption word of five or more two edits away, the one the
           captions held most ("trinagel" → "triangle");
        3. for a word of `OTHER_ENGLISH` letters or more, the one English word one edit away where it is the only
           one and the model can draw it — a colour name of the lexicon, or a word `reading` reads as a caption
           word ("turqoise" → "turquoise", then read by its colour); two or more ("magneta": magenta, magnet) or
           one it cannot draw ("dribbble": dribble) leave it as written, as do shorter words ("manga" is not a
           misspelt "mango", nor "figma" "sigma").
        """
        if len(word) < SHORTEST_MISSPELT or not _LOWER.fullmatch(word) or self._spelt_right(word, wordnet):
            return None
        if word not in self._meant:
            near = edits(word)
            counts = self.words
            seen = {w: max(counts.get(f, 0) for f in (w, *_plural_of(w, wordnet))) for w in near}
            structure = [w for w in near if seen[w] or len(word) > SHORTEST_MISSPELT
                         and _structure_word(w)]  # "hdr" is not "her"
            meant = max(structure, key=lambda w: (seen[w], w in counts, w)) if structure else None
            if meant is None and len(word) >= TWO_EDITS:
                two = [w for w in counts if len(w) >= 5 and _LOWER.fullmatch(w) and distance(word, w) <= 2]
                meant = max(two, key=lambda w: (counts[w], w)) if two else None
            if meant is None and len(word) >= OTHER_ENGLISH:
                english = [w for w in near if wordnet.is_word(w) or w in lexicon()]
                drawn = [w for w in english if w in lexicon() or self.reading(w, wordnet, True) is not None
                         or self.reading(w, wordnet) is not None]
                meant = drawn[0] if len(english) == 1 and drawn else None
            self._meant[word] = meant
        return self._meant[word]

    def _spelt_right(self, word: str, wordnet: WordNet) -> bool:
        """Whether ``word`` (lower case) is a word `meant` leaves as it is (its docstring)."""
        return word in self.words or _structure_word(word) or word in lexicon() or wordnet.is_word(word)

    def read_words(self, prompt: str, wordnet: WordNet) -> str:
        """``prompt`` with each never-seen word of its noun phrases replaced by its nearest object word (module
        docstring); the rest of the text as it was. A noun never seen is not read where the prompt names two objects
        in words the captions held, nor where it names one so and the noun has no modifier the captions held, nor one
        read as such, nor a colour name, nor a word that is no English word (a misspelt colour), as no phrase of that
        noun with one does, nor, among more than two phrases, one with no reading beside an object the captions named,
        modifiers and all: it tells where they are, not what ("Exercise 4 (2 marks): draw a cyan square", "spawn
        player (small yellow diamond)", "in a setting of pure midnight darkness, a large star"; "a navy tile above a
        red circle" reads "tile"). Nor is a never-seen word after an object's caption noun and before a function
        word, a verb ("a cyan cross marks a spot")."""
        replacements = []
        names = find_colour_names(prompt) if self.colours else []
        phrases = parse_phrases(prompt).objects

        def described(o: NounPhrase) -> bool:  # a modifier the captions held, or one read so, or a colour name
            words = [prompt[a:b].lower() for a, b in o.modifiers]
            return any(w in self._modifiers or self.reading(w, wordnet) is not None or (
                w.isalpha() and not wordnet.is_word(w)) for w in words) or bool(find_colour_names(" ".join(words)))

        drawn = [o for o in phrases if self._names_a_caption_object(prompt, o, wordnet)]
        kinds = {prompt[o.noun[0]:o.noun[1]].lower() for o in phrases if described(o)}
        for phrase in phrases:
            if not self._names_an_object(prompt, phrase, wordnet):
                continue
            others = [o for o in drawn if o is not phrase]
            noun = prompt[phrase.noun[0]:phrase.noun[1]]
            if not self._known_form(noun, wordnet) and (len(others) >= 2 or (others and (
                    not described(phrase) and noun.lower() not in kinds
                    or len(phrases) > 2 and self.reading(noun.lower(), wordnet, True) is None))):
                # the setting of objects it draws: "(2 marks)", "the player piece", "… deep black field", and, among
                # more phrases than two, "a setting of pure midnight darkness" (a noun naming nothing drawn: its
                # colour name is no object's either)
                continue
            coloured = self._colour_names(prompt, names, phrase.modifiers)
            replacements += coloured
            spans = [s for s in sorted((*phrase.modifiers, phrase.noun)) if not _within(s, [c[:2] for c in coloured])]
            follows = re.match(r"\s+(\w+)", prompt[phrase.noun[1]:])
            if phrase.modifiers and prompt[slice(*max(phrase.modifiers))].lower() in self._noun_names and not \
                    self._known_form(noun, wordnet) and follows and is_function_word(follows.group(1).lower()):
                spans.remove(phrase.noun)  # a verb after the object's noun: "a cyan cross marks a spot", not "cross"
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

    def _colour_names(self, prompt: str, names, modifiers) -> list[tuple[int, int, str | None]]:
        """(start, end, reading) of each colour name of ``names`` (`find_colour_names`) that a phrase's
        ``modifiers`` say, all its words among them ("navy", "sky blue"), and the captions never held whole."""
        found = []
        for name in names:
            words = [m.span() for m in _WORD.finditer(prompt, *name.span)]
            if all(_within(w, modifiers) for w in words) and not self._known(prompt[name.span[0]:name.span[1]]):
                found.append((*name.span, self.colour_reading(name.rgb)))
        return found

    def colour_reading(self, rgb: tuple[float, float, float]) -> str | None:
        """The word the training images drew nearest to the sRGB colour ``rgb`` (a colour name's, from the lexicon
        of `ldmkit.text.colour_words`): the least CIEDE2000 difference ΔE₀₀ with lightness counted half (k_L =
        `LIGHTNESS_WEIGHT`, as for textiles: a name says a hue before a lightness; "navy" → "blue", "lime" →
        "green", "pink" → "purple" for the shapes colours); of the words drawn in that colour (within `SAME_COLOUR`:
        "red", "crimson", "ruby") the one the captions held most. None (as written) where no drawn colour is within
        `FARTHEST_COLOUR`, or no colours were recorded."""
        drawn = self._drawn_lab
        if not drawn:
            return None
        lab = srgb_to_lab(rgb)
        nearest = min(drawn, key=lambda w: (colour_difference(lab, drawn[w], LIGHTNESS_WEIGHT), w))
        if colour_difference(lab, drawn[nearest], LIGHTNESS_WEIGHT) > FARTHEST_COLOUR:
            return None
        same = [w for w in drawn if colour_difference(drawn[nearest], drawn[w]) <= SAME_COLOUR]
        return max(same, key=lambda w: (self.words.get(w, 0), w))

    def _names_a_caption_object(self, prompt: str, phrase: NounPhrase, wordnet: WordNet | None) -> bool:
        """Whether a noun phrase names an object in the captions' words: its noun one of theirs (or an inflection of
        one), or a modifier one of their nouns ("the cyan triangle key": a triangle)."""
        return self._known_form(prompt[phrase.noun[0]:phrase.noun[1]], wordnet) or any(
            prompt[a:b].lower() in self._noun_names for a, b in phrase.modifiers)

    def _known_form(self, word: str, wordnet: WordNet | None) -> bool:
        """Whether ``word`` is a word the captions held, or an inflection of one ("circles")."""
        return self._known(word) or any(self._known(f) for f in (wordnet.base_forms(word) if wordnet else ()))

    def _names_an_object(self, prompt: str, phrase, wordnet: WordNet) -> bool:
        """Whether a noun phrase names something, so that its words are read: its noun is a word the captions held
        (or an inflection of one), or a noun WordNet knows — not a verb the chunker took for one ("… where a
        square sat way over …": "remember"), nor a lone word without an article that WordNet also knows as an
        adjective, as in a list of style words ("…, simple, vector"), whose noun senses are rarely the ones meant
        ("simple" → "square"; "an oval" is read), nor a word of the chunker's closed classes that it read as a noun
        after others ("minimalist vector illustration": the picture itself)."""
        noun = prompt[phrase.noun[0]:phrase.noun[1]]
        if self._known_form(noun, wordnet):
            return True
        if self._object(prompt, phrase).noun != phrase.noun:  # "a small cyan cross weighted to the left": a cross
            return True
        if is_function_word(noun.lower()):  # the picture, a place or a property: "…, vector illustration"
            return False
        if not phrase.modifiers and not _determiner_before(prompt, phrase.noun[0]) and wordnet.is_adjective(noun):
            return False
        return wordnet.is_noun(noun)

    def resay(self, prompt: str, wordnet: WordNet | None = None) -> str:
        """``prompt`` said again in the training captions' phrasing when a word outside its noun phrases is one they
        never held ("we see a red circle sitting higher than a square that is blue" → "a red circle above a blue
        square"), or its relation is said in an order they never use (before both objects, pointing back: "over
        the circle there is a square", "a square with a circle above it"), as it was otherwise.

        It is said again only when nothing but structure is lost: one object, or two with the relation the chunker
        reads between them (`ldmkit.text.phrases`); every word outside the objects, their place phrases and labels
        ("Layout:", "color=") of a closed class (`is_function_word`: articles, prepositions, verbs of placing and
        seeing …); each place on one side (a place that names none, "on a dark background", is lost with the
        structure, and so is one said not to hold: "not in the middle"); the captions holding a phrase for the
        relation or the place; given ``wordnet``, each object's noun a word they held or a noun WordNet knows (not a
        verb read as a noun: "I remember …"); and, for one object with no place, no side word left outside every
        place ("… nine tenths of the way down the image"). Each object is said as its determiner, modifiers and
        noun in that order ("a square that is blue" → "a blue square"); two objects as "A {relation} B", one as "A
        {place}", in the phrase the captions used most for that relation or side. A prompt in their words is said
        again too where an object of theirs has no article ("red circle above blue square" → "a red circle above a
        blue square"), as the captions always give one.

        A prompt holding words the captions never held that cannot be said again so, or need not be, is tried once
        more without what names nothing the model draws (`_drawn_part`: "a red circle on the left, minimal, 8k" →
        "a red circle on the left"); where noun phrases were left out, only a prompt then said again is taken."""
        if self.relations is None or self.places is None:
            return prompt
        said = self._said_again(prompt, wordnet)
        if said in (None, prompt) and not self._known(prompt):  # words it never held: what does it draw of it?
            drawn, phrases_left_out = self._drawn_part(prompt, wordnet)
            again = self._said_again(drawn, wordnet, shortened=True) if drawn != prompt else None
            if again is not None and not (phrases_left_out and again == drawn):  # without nouns: said again only
                said = again
        return prompt if said is None else said

    def _said_again(self, prompt: str, wordnet: WordNet | None, shortened: bool = False) -> str | None:
        """`resay` of ``prompt`` itself: None where it cannot be said again; ``prompt`` as it is where it need not be,
        its words outside its objects all the captions' and its relation plain, unless ``shortened`` (`_drawn_part`
        took words out), where it is said again if it can be. A word the captions held as a modifier only, set off
        by a comma after an object, describes it ("square, cyan, right side": `_only_modifier`)."""
        parsed = parse_phrases(prompt, self._only_modifier)
        if not parsed.objects:
            return None
        in_objects = [span for o in parsed.objects for span in (*o.modifiers, o.noun)] + list(parsed.again)
        # a label's words are structure, and so are those of a place said not to hold ("not in the middle")
        in_places = [p.span for p in parsed.places] + list(parsed.labels) + list(parsed.denied)
        outside = [m for m in _WORD.finditer(prompt) if not _within(m.span(), in_objects)]
        # as it is: the words outside its objects all the captions' (shortened: but for its places' words, which a
        # place the captions have no phrase for keeps: "a red circle, centered composition")
        as_it_is = prompt if parsed.plain and all(m.group().lower() in self.words or (
            shortened and _within(m.span(), in_places)) for m in outside) else None
        bare = any(_determiner_before(prompt, min(a for a, _ in (*o.modifiers, o.noun))) is None
                   and prompt[o.noun[0]:o.noun[1]].lower() in self._noun_names for o in parsed.objects)
        if as_it_is is not None and not shortened and not bare:  # (a bare object is said with its article)
            return prompt
        if not 1 <= len(parsed.objects) <= 2 or (len(parsed.objects) == 2 and parsed.relation is None):
            return as_it_is
        if not all(is_function_word(word.lower()) or _within(span, in_places) for m in outside
                   for word, span in _hyphen_parts(m)):  # "Left-aligned": a place, and a verb of placing
            return as_it_is
        if wordnet is not None and not all(self._names_an_object(prompt, o, wordnet) for o in parsed.objects):
            return as_it_is
        for o in parsed.objects:  # no word saying where is lost with the words after an object's noun
            kept = self._object(prompt, o)
            lost = {*o.modifiers, o.noun} - {*kept.modifiers, kept.noun}
            if any(says_where(prompt[a:b].lower()) for a, b in lost):
                return as_it_is
        if len(parsed.objects) == 2:
            link = _most(self.relations.get(parsed.relation or "", {}))
            if link is None:
                return as_it_is
            return f"{self._said(prompt, parsed.objects[0])} {link} {self._said(prompt, parsed.objects[1])}"
        sides = {p.meaning for p in parsed.places if p.meaning is not None or any(  # "on a dark background": none
            says_where(w.lower()) for w in _WORD.findall(prompt[p.span[0]:p.span[1]]))}
        if None in sides or len(sides) > 1:
            return as_it_is
        if not sides:  # (a side word outside its places would be lost: "… nine tenths of the way down the image")
            left = [m for m in outside if not _within(m.span(), list(parsed.denied))]
            lost = any(names_a_side(m.group().lower()) and prompt[m.end():].split()[:1] in (
                ["the"], ["to"], ["toward"], ["towards"], ["near"]) for m in left)  # "… way down the image"
            return as_it_is if lost else self._said(prompt, parsed.objects[0])
        place = _most(self.places.get(sides.pop() or "", {}))
        return as_it_is if place is None else f"{self._said(prompt, parsed.objects[0])} {place}"

    def _drawn_part(self, prompt: str, wordnet: WordNet | None) -> tuple[str, bool]:
        """``prompt`` less what names nothing the model draws: each part between clause marks (commas, stops,
        colons, dashes …) that holds no object word (`_object_word`) and no word saying where (`says_where`: a side,
        a relation, a verb of placing: "centered composition", "positioned hugging the floor") — a tag
        ("…, minimal, flat design, 8k", "trending on artstation"), a label ("Alt text: …"), an aside ("for the
        poster, …", "Can you make one for her?"); then, where more than two objects are left, or two without a
        relation between them or with one said after both to a phrase of no object word ("…, minimal headroom above
        it"), each noun phrase with no object word ("the designer should set …", "my daughter
        wants …") or, beside two that name objects in the captions' words, none among its nouns ("…, leaving a
        small gap between them"), with its determiner — never one of the two a relation joins ("a plus sign above a
        red circle"), nor a place the chunker took for an object, which holds or follows a word saying where ("…,
        centered composition", "positioned hugging the floor"; a noun, not an adverb: "stacked vertically"); a side
        left dangling by the phrase left out of one object is its place ("on the left side of [an endless dark
        sky]"). A part kept follows the one kept before it after the mark that came before it; the second value says
        whether noun phrases were left out."""
        pieces = _PARTS.split(prompt)  # part, mark, part, …
        text, mark = "", ""
        for i in range(0, len(pieces), 2):
            part = pieces[i].strip()
            if part and any(self._object_word(w, wordnet) or says_where(w.lower()) for w in _WORD.findall(part)):
                text += f"{' ' if mark in '|/—–-' else ''}{mark} {part}" if text else part
                mark = ""
            if not mark and i + 1 < len(pieces):  # the mark that ended the part kept last: "a | b" stays two clauses
                mark = pieces[i + 1].strip() or "-"
        parsed = parse_phrases(text, self._only_modifier)
        if len(parsed.objects) < 2 or (len(parsed.objects) == 2 and parsed.relation is not None and (
                parsed.plain or all(self._object_word(text[o.noun[0]:o.noun[1]], wordnet) or any(
                    self._object_word(text[a:b], wordnet) for a, b in o.modifiers) for o in parsed.objects))):
            return text, False  # its objects are what the prompt asks for, whether or not the model can draw them
        left_out = False
        drawn = sum(any(self._object_word(text[a:b], wordnet) for a, b in (*o.modifiers, o.noun))
                    for o in parsed.objects)
        named = [o for o in parsed.objects if self._names_a_caption_object(text, o, wordnet)]
        for phrase in sorted(parsed.objects, key=lambda o: o.noun, reverse=True):
            spans = sorted((*phrase.modifiers, phrase.noun))
            before = [w.lower() for w in _WORD.findall(text[:spans[0][0]])]
            counted = False  # a side, then a determiner: how far ("… to the right a few steps"), not a place
            while before and is_determiner(before[-1]):
                counted = True
                before.pop()
            noun = text[phrase.noun[0]:phrase.noun[1]]
            setting = phrase not in named and len(named) >= 2  # "…, leaving a small gap between them"
            if not setting and any(self._object_word(text[a:b], wordnet) for a, b in spans) or any(
                    says_where(text[a:b].lower()) for a, b in spans) or (
                    before and says_where(before[-1]) and not (counted and names_a_side(before[-1])) and (
                        wordnet is None or wordnet.is_noun(noun))):
                continue  # an object, or a place: "…, centered composition", "positioned hugging the floor" (not
                # an adverb: "stacked vertically")
            start, end = spans[0][0], spans[-1][1]
            lead = _determiner_before(text, start)
            if lead is not None:
                start = lead.start(1)
            side = _SIDE_OF.search(text[:start])  # "a circle on the left side of [an endless dark sky]": a place
            if side is not None and drawn == 1 and not text[end:].strip()[:1].isalnum():
                start = side.start(1)
            text = text[:start] + text[end:]
            left_out = True
        return re.sub(r"\s+", " ", text).strip(), left_out

    def _object_word(self, text: str, wordnet: WordNet | None) -> bool:
        """Whether ``text`` holds a word of the captions' objects that names something drawn: a modifier ("red",
        "small") or a noun that is no general word above most (`_noun_targets`: "circle", not "shape"), or an
        inflection of one."""
        nouns = self._noun_targets(wordnet) if wordnet is not None else self._nouns
        for word in _WORD.findall(text.lower()):
            forms = [word, *(wordnet.base_forms(word) if wordnet is not None else ())]
            if any(f in self._modifiers or f in nouns for f in forms):
                return True
        return False

    def _only_modifier(self, word: str) -> bool:
        """Whether the captions held ``word`` (lower case) as a modifier and never as a noun ("cyan", "small"; not
        "cross", "cross figure"'s modifier), what `parse_phrases` lets describe the object before it."""
        return word in self._modifiers and word not in self._noun_names

    def _object(self, prompt: str, phrase: NounPhrase) -> NounPhrase:
        """The object a noun phrase names: after a word the captions held as a noun, a "noun" they held only as a
        modifier trades places with it ("make the triangle green" → "the green triangle"), and one they never held
        ends nothing (a verb: "a square sat way over …" → "a square")."""
        noun_word = prompt[phrase.noun[0]:phrase.noun[1]].lower()
        last_noun = max((m for m in phrase.modifiers if prompt[m[0]:m[1]].lower() in self._noun_names), default=None)
        if last_noun is None or noun_word in self._noun_names:
            return phrase
        before = tuple(m for m in phrase.modifiers if m[0] < last_noun[0])
        return NounPhrase((*before, phrase.noun) if noun_word in self._modifiers else before, last_noun)

    def _said(self, prompt: str, phrase: NounPhrase) -> str:
        """A noun phrase as its determiner (the word right before it; "a"/"an" where it has none and its noun is one
        the captions held, singular, as theirs do: "red circle, blue square below it" → "a red circle above a blue
        square", which the default model draws right 96% of the time against 79% without the articles,
        experiments/NOVEL_PHRASINGS.md), modifiers and noun, of the object it names (`_object`); the modifiers said
        after the noun come first ("a petite plus sign of red colour" → "a red petite plus sign"), so that those
        before it keep their place, a compound's first word next to its noun."""
        phrase = self._object(prompt, phrase)
        first = min(a for a, _ in (*phrase.modifiers, phrase.noun))
        after = sorted(m for m in phrase.modifiers if m[0] > phrase.noun[0])
        before = sorted(m for m in phrase.modifiers if m[0] < phrase.noun[0])
        words = [prompt[a:b] for a, b in (*after, *before, phrase.noun)]
        lead = _determiner_before(prompt, first)
        if lead is None:
            if prompt[phrase.noun[0]:phrase.noun[1]].lower() not in self._noun_names:  # "circles", "plus sign"
                return " ".join(words)
            return _article("a ", words[0].lower()) + " ".join([words[0].lower(), *words[1:]])
        article = {"said": "the"}.get(lead.group(1).lower(), lead.group(1))  # a specification's "said circle"
        if article.lower() in ("a", "an"):  # fitted to the first word said, lower case (the prompt's start moved)
            article = _article(article.lower() + " ", words[0]).rstrip()
        return " ".join([article, *words])

    def knows(self, prompt: str) -> bool:
        """Whether every word of ``prompt`` occurred in the training captions (`rewrite` may still say it again in
        their phrasing: "red square top" → "a red square near the top")."""
        return self._known(prompt)

    def _known(self, text: str) -> bool:
        return all(w in self.words for w in _WORD.findall(text.lower()))

    def reading(self, text: str, wordnet: WordNet, noun: bool = False) -> str | None:
        """The object word a never-seen word (or compound) ``text`` is read as, None for as written: its nearest by
        upward links among the words seen in its role — a known noun for the phrase's ``noun``, a known modifier
        for a modifier ("single" is never read as the noun "figure", nor "flat" as "box"), but never a modifier the
        captions also held as a noun ("solid" is not "square", as in "square shape"), nor, where the training images
        recorded which colour each colour word draws (``colours``), a colour word (a colour name is read by its
        colour, `colour_reading`; "clean" and "blank" are not "white"); failing that, where it is the phrase's noun,
        a known noun that names a kind of it (`WordNet.narrower`: "rectangle" → "square"). A
        number ("3", "1.5", "2nd") is read as written: WordNet holds digits as nouns ("3" → "figure"), but a number
        says how many or which, not what."""
        if any(c.isdigit() for c in text):
            return None
        key = (text.lower(), noun)
        if key not in self._nearest:
            near = wordnet.nearest(key[0], self._noun_targets(wordnet) if noun else self._modifier_targets, DEPTH)
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

    @functools.cached_property
    def _modifier_targets(self) -> dict[str, int]:
        """The modifiers a phrase's modifier may be read as (`reading`): those the captions never held as a noun, and
        no colour word where ``colours`` records them."""
        nouns = self._noun_names
        return {w: c for w, c in self._modifiers.items() if w not in nouns and w not in self.colours}

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
    def _drawn_lab(self) -> dict[str, tuple[float, float, float]]:
        """``colours`` in CIELAB, what `colour_reading` compares."""
        return {w: srgb_to_lab(c) for w, c in self.colours.items()}

    @functools.cached_property
    def _noun_names(self) -> dict[str, int]:
        """What a phrase's noun may be read as: every object word and name but those seen only as a modifier."""
        nouns, modifiers = self._nouns, self._modifiers
        return {name: count for name, count in self.objects.items() if name in nouns or name not in modifiers}


def _structure_word(word: str) -> bool:
    """Whether ``word`` (lower case) is a word of a closed class: one the chunker reads as structure, or one of the
    closed-class words WordNet leaves out (`ldmkit.text.spelling.CLOSED_CLASS`)."""
    return is_function_word(word) or word in CLOSED_CLASS


def _plural_of(word: str, wordnet: WordNet) -> list[str]:
    """The nouns ``word`` is the plural of by WordNet ("circles" → circle, "boxes" → box), not other base forms,
    which its detachment rules also make of words no one writes ("biger" → big)."""
    return [f for f in wordnet.base_forms(word) if word in (f + "s", f + "es", f[:-1] + "ies") and wordnet.is_noun(f)]


def _hyphen_parts(match: re.Match) -> list[tuple[str, tuple[int, int]]]:
    """The parts of a word matched in a prompt between its hyphens, with their spans ("left-aligned": left, aligned)."""
    parts, start = [], match.start()
    for part in match.group().split("-"):
        parts.append((part, (start, start + len(part))))
        start += len(part) + 1
    return parts


def _within(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(a <= span[0] and span[1] <= b for a, b in spans)


def _most(phrases: dict[str, int]) -> str | None:
    """The phrase seen most often (the shorter, then the first in order, on a tie); None for none."""
    return min(phrases, key=lambda p: (-phrases[p], len(p), p)) if phrases else None


def _plain(phrases: dict[str, Counter]) -> Phrases:
    return {k: dict(v) for k, v in phrases.items()}
