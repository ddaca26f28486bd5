"""Which words of a prompt describe which object: a small rule-based chunker, no model and no vocabulary
of objects.

English keeps its function words in closed classes (articles, prepositions, conjunctions, pronouns, a few verbs of
placing and seeing), so a prompt splits at them into runs of content words. Each run is a noun phrase: its last word
is the noun (the object), the words before it its modifiers ("a small red circle": modifiers small, red; noun
circle; "red circle, blue square": two phrases). A run that follows "in", "coloured", "that is" … without an article
of its own describes the noun before it ("a star in red", "a box that is small and blue", "a box of red colour"),
and so does one word set off by commas after an object named with its article ("a square, red, at the top"); words
naming a side at the end of a clause are a place of their own ("yellow square right, orange cross left"). Runs whose
noun is a place ("on the left side", "at the top", "at the foot of the page") or the picture itself ("a picture of
…", "an image with …", "… in the picture", "at the top of the image") name no object, nor does an imperative that
opens the prompt ("Render a …", "Place a …") or a label ("Brief: …", "color=red"); a relation to the picture is a
place ("to the left of the image": on the left), and a place of "its" a relation to the object named before ("put A
to its left": A left of it).

The first relation word between (or before) the first two objects gives their relation: "A above B", "A to the left
of B", "above B there is A"; one followed by a word that points back ("it", "which", "them", "that one") places the
other object against the one named before it ("A and, beneath it, B", "A with B beneath it", "A, below which is B",
"A on top, B below it", "There's A. Below that one, add B": B below A); one after both places the object named last
("A and B, the A above": A above B); without one, places at opposite sides in the two objects' own clauses give it
("A at the top, B at the bottom"; "A and B, the A on the right and the B on the left"), or, side by side ("A next to
B"), a left or right side of one of them ("…, with A on the left"), or, failing those, an order said outright that
lists them ("row: A, B // left to right", "order=top-to-bottom"). An object named again ("the circle" after "a red
circle") is a mention of it: words after it describe it ("… The circle is red"), its clause places it. A comparative
with its "than" relates the two it stands between ("A should be higher in the picture than B"). `resolve_references`
names objects referred to by order, modifier or side ("the first one", "the red one", "the lower one") by their own
words first, so that they are mentions too.

A place or relation in a clause that negates it ("not in the middle", "I don't want it centred"), or said empty
("negative space to the right", "the left half stays empty"), or called wrong in the clause after it, holds
nothing (``denied``), and neither does what follows "no" or "without". Directions name a side to move to between
two objects ("Find A, then go a bit to the left and you'll see B": B left of A). `drop_corrections` drops a place
or relation taken back for another ("on the left no wait the right"), `clock_places` says a clock's hour as its
side ("at six o'clock": at the bottom).

`parse_phrases` returns character spans, which a tokenizer maps to its own tokens
(`FixedLengthTokenizer.token_indices`), so the same parse serves WordPiece, CLIP's BPE and the rest; and, with
what each says, the spans of the relation phrases ("further left than": left of) and place phrases ("up at the
top": top), which `ldmkit.text.known_words` records from training captions and says prompts again in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

Span = tuple[int, int]

_DETERMINERS = {"a", "an", "the", "one", "two", "some", "this", "that", "these", "those", "another", "each",
                "every", "its", "his", "her", "their", "my", "your", "our", "any", "all", "both", "many", "several",
                "few", "lots", "lot", "plenty", "1", "2", "said"}  # "just 1 blue square"; a patent's "said circle"
# Prepositions, particles and adverbs of degree: the words that lead a place phrase ("up at the very top").
_PREPOSITIONS = {
    "of", "in", "on", "at", "to", "with", "by", "from", "near", "next", "beside", "besides", "behind", "above",
    "over", "under", "below", "beneath", "underneath", "between", "into", "onto", "inside", "outside", "around",
    "across", "against", "along", "among", "beyond", "upon", "toward", "towards", "through", "than", "up", "down",
    "off", "for", "as", "further", "farther", "higher", "lower", "very", "just", "also", "please", "directly",
    "slightly", "somewhat", "immediately", "far", "close", "way", "about", "around", "roughly", "approximately",
    "adjacent", "proximal", "laterally",  # a specification's: "disposed proximal to the left margin"
}  # fmt: skip
# A place or relation said not to hold: after one of these in its clause ("not in the middle", "I don't want it
# centred"), or said empty ("negative space to the right", "the left half stays empty": `_denied`)
_NEGATIONS = {"not", "never", "nor"}  # and every word ending in "n't"
_NONE = {"no", "without"}  # what follows names nothing drawn: "no gradients", "without a border"
_EMPTY_BEFORE = {"empty", "blank", "negative", "space", "room", "gap"}  # before the place, no object between
_EMPTY_AFTER = {"empty", "blank", "bare", "vacant", "open", "clear", "free", "unused"}  # ending its clause
_BEING = {"stays", "stay", "remains", "remain", "is", "are", "be", "kept", "keep", "left", "should", "will", "must",
          "to", "as", "fully", "completely", "totally", "entirely", "mostly", "otherwise", "still"}
# Verbs of placing: they say where an object is ("placed near the top", "pushed to the left").
_PLACING = {"sits", "sit", "sitting", "stands", "stand", "standing", "lies", "lie", "lying", "placed", "put", "set",
            "located", "positioned", "aligned", "anchored", "stacked", "rests", "resting", "floats", "floating",
            "hovers", "hovering", "perched", "situated", "pushed", "moved", "shifted", "go", "goes", "going",
            "hugging", "hugs", "nestled", "tucked", "pinned", "docked", "touching", "hanging", "hangs", "sat",
            "staying", "grounded", "holds", "hold", "holding", "occupies", "occupy", "occupied", "occupying",
            "disposed", "arranged", "mount", "mounted", "hung",
            }  # (not "stay": "the background should stay dark")
_KEEPING = {"keep", "keeps", "keeping"}  # "keeping A on the left", "keep it simple": no object, no place of its own
# Verbs of moving, in directions: a side after one, before any object of its clause, places the object named next
# against the one named before ("Find A, then go a bit to the left and you'll see B": B left of A)
_MOTION = {"go", "goes", "going", "head", "heads", "heading", "drop", "move", "moving", "walk", "walking", "keep",
           "keeps", "keeping", "continue", "turn", "step", "travel", "pass", "climb", "climbing"}
_FUNCTION = _DETERMINERS | _PREPOSITIONS | _PLACING | _EMPTY_AFTER | (_MOTION - {"head"}) | {
    # conjunctions and pronouns
    "and", "or", "but", "while", "whereas", "it", "they", "them", "there", "here", "i", "you", "we", "he", "she",
    "him",
    "which", "who", "where", "what", "is", "are", "was", "were", "be", "being", "been", "has", "have", "had",
    "there's", "here's", "it's",
    # verbs of showing and seeing
    "see", "sees", "seen", "draw", "drawn", "show", "shows", "showing", "shown",
    "depicting", "featuring", "containing", "make", "made", "can", "coloured", "colored", "appears",
    "appearing", "displayed", "rendered", "painted", "depicted", "generate", "create", "paint", "give", "me", "us",
    "only", "could", "would",
    # verbs and words of asking
    "get", "got", "want", "wants", "need", "needs", "like", "let", "add", "include", "should", "will", "must", "may",
    "might", "then", "nothing", "else", "more", "mind", "first", "second", "last", "finally", "pls", "plz",
    "thanks", "i'd", "i'm", "let's", "that's", "what's", "ok", "okay", "now", "so", "too", "again", *_KEEPING,
    # words of remembering and hedging: "I remember …", "I'm sure it was small"
    "remember", "recall", "think", "guess", "believe", "sure", "maybe", "perhaps", "probably", "when", "whenever",
    # fillers and greetings of speech: "um, like, put a …", "hey can you …", "…, ta", "cheers"
    "um", "uh", "er", "erm", "hmm", "hey", "hi", "hello", "ta", "mate", "cheers", "sorry", "wait",
    "actually", "really", "kinda", "basically", "literally", "other", "shall", "do", "does", "did", "thereof",
    "alone",
    # chat: "can u make …", "… rn lol"
    "u", "ur", "rn", "lol", "omg", "ngl", "btw", "tbh", "imo", "thx", "bruh", "fr", "yo", "gg", "ez", "idk", "smh",
    "you'll", "you're", "i'll", "we'll",
    # directions: "go a bit to the left till you …"
    "till", "until", "nearly", "almost", "bit",
    # staying as it is: "the left half stays empty", "leaving the left open"
    "remains", "remain", "stays", "stay", "stayed", "leaving", "leave", "horizontally", "vertically",
}  # fmt: skip
# Nouns of place (a run ending in one names where, not what) and of the picture itself ("a picture of …").
_PLACES = {"left", "right", "top", "bottom", "middle", "centre", "center", "side", "corner", "edge", "front",
           "back", "half", "part", "background", "foreground", "area", "region", "position", "place", "high", "low",
           "margin", "centred", "centered", "space", "backdrop", "edges", "sides", "corners", "margins", "hemisphere",
           "boundary"}
# Nouns that name a place where a side word comes with them ("its middle point", "the upper section"), and else
# what they say ("a red point"): `_is_place`
_SIDED_PLACES = {"point", "spot", "location", "zone", "section", "portion", "strip", "band", "third", "quarter",
                 "row", "column", "line", "register", "lane", "rank", "end", "level", "height"}
_MEDIA = {"picture", "image", "photo", "photograph", "drawing", "painting", "illustration", "render",
          "rendering", "scene", "view", "sketch", "shot", "frame", "canvas", "composition", "page", "artboard",
          "screen", "paper", "sheet", "poster", "display", "wall", "board", "map", "plan", "grid"}
# After these (without an article), a run of words describes the noun before it ("a square that is blue", "the
# diamond should be purple").
_POSTNOMINAL = {"in", "coloured", "colored", "painted", "is", "are", "be", "was", "were", "that's"}
# A medium ("image", "picture") names the frame, not an object, before these words or after these prepositions
# ("a picture of …", "an image with …", "at the top of the image", "in the picture").
_FRAME_AFTER = {"of", "with", "showing", "containing", "depicting", "featuring", ":", "where", "that", "which",
                "has", "have", "shows", "contains", "features"}
_FRAME_LEAD = {"of", "in", "on", "inside", "within"}
# Parts of the frame that name a side where "of" and the frame follow ("at the foot of the page": at the bottom).
_FRAME_PARTS = {"foot": "bottom", "base": "bottom", "floor": "bottom", "head": "top", "ceiling": "top"}
# Parts of a place inside something: what follows "of" names the frame ("in the top half of the box")
_INSIDE = {"half", "third", "quarter", "part", "portion", "section", "corner", "area", "region", "zone"}
# Nouns of a property: "of red colour", "of small size" describe the noun before them.
_PROPERTIES = {"colour", "color", "hue", "shade", "tone", "size"}
# Relation words → relation (longest first when matching).
_RELATIONS = {
    "to the left of": "left of", "on the left of": "left of", "left of": "left of", "further left than": "left of",
    "to the right of": "right of", "on the right of": "right of", "right of": "right of",
    "further right than": "right of", "above": "above", "over": "above", "higher than": "above",
    "on top of": "above", "atop": "above", "below": "below", "under": "below", "beneath": "below",
    "underneath": "below",
    "lower than": "below",
    # the same said otherwise
    "to the left side of": "left of", "on the left side of": "left of",
    "farther left than": "left of", "to the right side of": "right of", "on the right side of": "right of",
    "farther right than": "right of", "higher up than": "above",
    "further up than": "above", "farther up than": "above", "lower down than": "below", "further down than": "below",
    "farther down than": "below", "to the left from": "left of", "left from": "left of",
    "further to the left than": "left of", "farther to the left than": "left of",
    "further to the right than": "right of", "farther to the right than": "right of",
    "to the right from": "right of", "right from": "right of",
    # a flat picture's compass: north up
    "north of": "above", "south of": "below", "to the west of": "left of", "west of": "left of",
    "to the east of": "right of", "east of": "right of", "to the north of": "above", "to the south of": "below",
    "due north of": "above", "due south of": "below", "due west of": "left of", "due east of": "right of",
    # anatomy's and a specification's
    "superior to": "above", "inferior to": "below",
}  # fmt: skip
_RELATION_PHRASES = sorted(_RELATIONS, key=lambda p: len(p.split()), reverse=True)
# A place's words → the side it names.
_PLACE_SIDES = {"top": "top", "upper": "top", "up": "top", "bottom": "bottom", "lower": "bottom", "down": "bottom",
                "left": "left", "left-hand": "left", "right": "right", "right-hand": "right", "middle": "centre",
                "centre": "centre", "center": "centre", "central": "centre", "centred": "centre", "centered": "centre",
                "high": "top", "low": "bottom", "north": "top", "south": "bottom", "west": "left", "east": "right",
                **{f"{compass}{ending}": side for compass, side in (("north", "top"), ("south", "bottom"),
                                                                    ("west", "left"), ("east", "right"))
                   for ending in ("ern", "ernmost")},  # "the northern half", "the southernmost part"
                **{f"{side}most": side for side in ("left", "right", "top", "bottom")},
                "uppermost": "top", "lowermost": "bottom", "superior": "top", "inferior": "bottom",  # anatomy's
                "ceiling": "top", "floor": "bottom"}  # a wall's: "at ceiling height", "down at the floor line"
_LOOSE_SIDES = {"up", "down", "high", "low"}
_RELATION_WORDS = {w for p in _RELATIONS for w in p.split()} - _LOOSE_SIDES - {"of", "on", "the", "to", "than",
                                                                                "side", "further", "farther"}

_INVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
_RELATION_SIDES = {"above": "top", "below": "bottom", "left of": "left", "right of": "right"}  # "… of the image"
_SIDE_RELATION = {side: relation for relation, side in _RELATION_SIDES.items()}  # "… to its left": left of
# Words right after a relation phrase that point back to an object named before it ("beneath it").
_BACK = {"it", "which", "them", "whom", "him", "her"}
_BACK_DEMONSTRATIVES = {"that", "this"}  # … followed by "one", a copula or a clause's end: "below that one, add B"
_COPULAS = {"is", "was", "are", "were", "sits", "sat", "lies", "stands"}
# "the first one", "the latter": which of the two objects named before (`resolve_references`)
_ORDINAL_REFERENCES = {"first": 0, "former": 0, "second": 1, "latter": 1}
_REFERENCE_NOUNS = {"one", "shape", "object", "item", "thing", "figure"}  # "the red one", "the lower shape"
_SIDE_REFERENCES = {"upper": "top", "top": "top", "higher": "top", "lower": "bottom", "bottom": "bottom",
                    "left": "left", "leftmost": "left", "right": "right", "rightmost": "right"}
_OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
# Two objects side by side: a side given to one of them puts the other on the opposite side (`_relation_of_places`)
# A clock's hours on one side of the picture ("at six o'clock": at the bottom), `clock_places`
_CLOCK_SIDES = {"twelve": "top", "12": "top", "three": "right", "3": "right", "six": "bottom", "6": "bottom",
                "nine": "left", "9": "left"}
# Each side said as a place phrase, as the prompts said again by `ldmkit.text.known_words` say it
SIDE_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                "centre": "in the centre"}
_CLOCK = re.compile(r"\b(?:at\s+)?(twelve|12|three|3|six|6|nine|9)\s*o['’]?\s?clock\b", re.IGNORECASE)
# Words that take back the place or relation right before them for the one right after ("on the left no wait
# the right": `drop_corrections`)
_CORRECTION = re.compile(r"[\s,;:.!—–-]*\b(?:no,?\s+wait|wait,?\s+no|no\s+no|sorry|i\s+mean|or\s+rather|"
                         r"scratch\s+that|make\s+that|correction)\b[\s,;:.!—–-]*", re.IGNORECASE)
_BESIDE = re.compile(r"\b(?:next to|beside|alongside|side by side|side-by-side)\b")
# The order two objects are listed in, said outright: "row: A, B (left to right)", "order=top-to-bottom"
_READING_ORDER = re.compile(r"\b(left|right|top|bottom)[\s-]+to[\s-]+(?:the[\s-]+)?(left|right|top|bottom)\b")
_ORDER_RELATION = {("left", "right"): "left of", ("right", "left"): "right of", ("top", "bottom"): "above",
                   ("bottom", "top"): "below"}
# A comparative without "than" places its object against the one named before it ("…, and higher up, A").
_COMPARATIVES = {"higher": "above", "lower": "below"}
_THERE = {"there", "here", "now", "away"}  # "right there": exactly there, no side
# Words of exactness before a place ("dead centre", "slap bang in the middle"): structure there
_EXACTLY = {"dead", "smack", "slap", "bang", "dab", "squarely", "exactly", "perfectly", "plumb", "exact", "straight"}
_CLOSED = _FUNCTION | _NEGATIONS | _NONE | _EXACTLY | _MOTION | _PLACES | _MEDIA | _PROPERTIES | {
    w for p in _RELATIONS for w in p.split()}
_ADVERB_OVER = {"on", "to", "at", "in", "by", "toward", "towards", "there", "here"}  # "over" before these: no relation
_CLAUSE_ENDS = {"", ",", ";", ".", "!", "?", "|", "—", "–"}  # what follows a clause's last word ("": the end)
_CLAUSE_MARKS = {",", "and", ";", ".", "!", "?", "/", "|", "while", "whereas", "but"}  # what separates two clauses
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


@dataclass(frozen=True)
class NounPhrase:
    """An object of the prompt: the spans of its modifiers and of its noun."""

    modifiers: tuple[Span, ...]
    noun: Span


@dataclass(frozen=True)
class Said:
    """A phrase that says a relation or a place: what it says ("above"; "top", "left", "centre", or None for a
    place on no one side, "the top left corner") and its span ("higher than"; "in the top half")."""

    meaning: str | None
    span: Span


@dataclass(frozen=True)
class PromptPhrases:
    """The objects a prompt names, in order, and the relation of the first to the second (or None); every relation
    phrase and place phrase it holds, in order; whether the relation was said plainly (``plain``: False where it
    came before both objects, pointed back or came after both); the spans of the words that name an object again
    (``again``: "the circle" after "a red circle"), of the words of labels (``labels``: "Brief:", "color="), and of
    the places and relations said not to hold (``denied``: "not in the middle", "negative space to the right"),
    which are in neither ``relations`` nor ``places``, and of what is said not to be there ("no text", "without a
    border"), which names no object."""

    objects: tuple[NounPhrase, ...] = field(default_factory=tuple)
    relation: str | None = None
    relations: tuple[Said, ...] = ()
    places: tuple[Said, ...] = ()
    plain: bool = True  # the relation said as training captions say it: between the two ("A above B") or by places
    again: tuple[Span, ...] = ()  # the words of objects named again ("…, the circle at the top": circle)
    labels: tuple[Span, ...] = ()  # the words of labels ("Brief: …", "color=red": Brief, color)
    denied: tuple[Span, ...] = ()  # places and relations said not to hold, things said absent ("no text")


def is_determiner(word: str) -> bool:
    """Whether ``word`` (lower case) is an article or another determiner ("a", "the", "one", "two", "each" …)."""
    return word in _DETERMINERS


def says_where(word: str) -> bool:
    """Whether ``word`` (lower case) says where an object is: a word naming a side ("top", "left-hand",
    "centered"; not "up", "down", "high" or "low", which say other things as often: "high quality"), a word of a
    relation phrase ("above", "beneath") or a verb of placing ("positioned", "pushed"), or a word joined by hyphens
    that holds a side ("right-aligned", "top-to-bottom")."""
    if "-" in word and word not in _PLACE_SIDES:
        return any(says_where(part) for part in word.split("-") if part in _PLACE_SIDES)
    return (word in _PLACE_SIDES and word not in _LOOSE_SIDES) or word in _RELATION_WORDS or word in _PLACING


def names_a_side(word: str) -> bool:
    """Whether ``word`` (lower case) names a side of the picture ("left", "upper", "centred", "north")."""
    return word in _PLACE_SIDES


def is_function_word(word: str) -> bool:
    """Whether ``word`` (lower case) is of a closed class the chunker reads as structure, never as an object: an
    article, preposition, conjunction, pronoun, verb of placing or seeing, a noun of place, medium or property, a
    word of a relation phrase, or a punctuation mark."""
    return word in _CLOSED or not word[:1].isalnum() or word.endswith(("n't", "n’t"))


def _items(text: str) -> list[tuple[str, str, Span]]:
    """The prompt as (kind, word, span): kind "rel" (a relation phrase, word = the relation), "func"
    (a function word or a punctuation mark) or "content"."""
    words = [(m.group().lower(), m.span()) for m in _WORD.finditer(text)]
    items, i = [], 0
    while i < len(words):
        for phrase in _RELATION_PHRASES:
            parts = phrase.split()
            if phrase == "over" and i + 1 < len(words) and words[i + 1][0] in _ADVERB_OVER:
                continue  # an adverb: "a square over on the right", "over to the left of the circle"
            if [w for w, _ in words[i:i + len(parts)]] == parts:
                if i > 0 and words[i - 1][0] == "one" and [w for w, _ in words[i + len(parts):i + len(parts) + 2]] in (
                        ["the", "other"], ["another"]):
                    continue  # "one over the other": how they stand, not which is where
                items.append(("rel", _RELATIONS[phrase], (words[i][1][0], words[i + len(parts) - 1][1][1])))
                i += len(parts)
                break
        else:
            word, span = words[i]
            # "right in the middle", "right there": "right" = exactly; "top-to-bottom": an order (`_READING_ORDER`)
            placed = word in _PLACE_SIDES and word not in _LOOSE_SIDES and i + 1 < len(words) and (
                words[i + 1][0] in _PLACES | _SIDED_PLACES)
            placed = placed or (word in ("up", "down") and i > 0 and words[i - 1][0] in _MOTION | {"straight"})
            function = word == "head" and i + 1 < len(words) and (  # "head straight up", not "the head of …"
                words[i + 1][0] in (_PREPOSITIONS - {"of"}) | _EXACTLY | set(_PLACE_SIDES))
            function = function or (word in _FUNCTION | _NEGATIONS | _NONE and not placed) or (  # "the lower third"
                i == 0 and word == "right" and len(words) > 2 and words[1][0] == ","  # "Right, so I'd like …"
                and words[2][0] in _FUNCTION) or (
                word.endswith(("n't", "n’t")) or not word[0].isalnum() or bool(_READING_ORDER.fullmatch(word))) or (
                word in _EXACTLY and i + 1 < len(words) and (  # "dead centre", "slap bang in the middle"
                    words[i + 1][0] in _PREPOSITIONS | _EXACTLY | _PLACES | set(_PLACE_SIDES))) or (
                word == "right" and i + 1 < len(words) and (words[i + 1][0] in _PREPOSITIONS - {"of"} or (
                    words[i + 1][0] in _THERE and (i == 0 or words[i - 1][0] not in _DETERMINERS | {"far"}))))
            side, _, verb = word.partition("-")
            if side in _PLACE_SIDES and verb in _PLACING:  # "right-aligned": the side, then the verb of placing
                cut = span[0] + len(side)
                items += [("content", side, (span[0], cut)), ("func", verb, (cut + 1, span[1]))]
                i += 1
                continue
            if word in _COMPARATIVES and (i == 0 or words[i - 1][0] not in _DETERMINERS) and (
                    i + 1 == len(words) or words[i + 1][0] not in _PLACES):
                # "B, and higher up, A": a relation to the object named before (not "the lower edge")
                items.append(("rel", _COMPARATIVES[word], span))
            else:
                items.append(("func" if function else "content", word, span))
            i += 1
    return items


def parse_phrases(text: str, modifier: Callable[[str], bool] | None = None) -> PromptPhrases:
    """The noun phrases of ``text`` and the relation between the first two (see the module docstring). Given
    ``modifier`` (lower-case word → whether a vocabulary holds it as a modifier only, never as a noun), one such
    word set off by a comma right after an object describes it, with or without an article before the object:
    "square, cyan, right side", "diamond, orange | star, yellow" (the chunker alone knows no words)."""
    # Runs of content words, each with the function words and relations before it (its lead).
    runs: list[tuple[list[str], list[Span], str]] = []  # (lead, spans, the word right after)
    leads: list[list[Span]] = []  # the spans of each run's lead
    lead: list[str] = []
    lead_spans: list[Span] = []
    # (number of runs before it, relation, whether it points back, whether it follows the run before it in its
    # clause: "A with B beneath it" against "A, and beneath it B", its span)
    relations: list[tuple[int, str, bool, bool | None, Span]] = []
    said: list[Said] = []
    spans: list[Span] = []
    items = _items(text)
    for i, (kind, word, span) in enumerate(items):
        if kind == "content":
            spans.append(span)
            continue
        if spans:
            _close_run(text, runs, leads, lead, lead_spans, spans, word)
            lead, lead_spans, spans = [], [], []
        if kind == "rel":
            after = [w for _, w, _ in items[i + 1:i + 3]] + ["", ""]
            back = after[0] in _BACK or (after[0] in _BACK_DEMONSTRATIVES and (
                after[1] == "one" or after[1] in _CLAUSE_ENDS | _COPULAS | _DETERMINERS))  # "… of that was B"
            back = back or (text[span[0]:span[1]].lower() in _COMPARATIVES and not _than_follows(items, i))
            relations.append((len(runs), word, back, not any(w in _CLAUSE_MARKS for w in lead), span))
            said.append(Said(word, span))
        lead.append(word)
        lead_spans.append(span)
    if spans:
        _close_run(text, runs, leads, lead, lead_spans, spans, "")

    objects: list[NounPhrase] = []
    mentions: list[tuple[int, int]] = []  # (run index, object index): every run that names an object
    pending: tuple[Span, ...] = ()  # "a crimson, big square": modifiers carried to the next run
    attached = False  # the last run described the object before it
    touching = False  # since the last object named or described, only labels and marks ("square. Colour: red")
    introduced = False  # the last object named came with its determiner ("a square")
    named = -1  # the object named last, introduced or named again ("…; the circle is red": the circle)
    again: list[Span] = []
    labels: list[Span] = []
    unsaid: list[Span] = []  # the words of what is said not to be there ("no text")
    inside = False  # the run before named a part of what follows ("the top half of …")
    clause = 0  # clauses are separated by a comma, "and" or ";" between runs
    clauses: list[set[int]] = []  # the clauses that name each object (introduced, or named again)
    # (clause, words, span, the object named last before it in its clause or -1) of each run that names a place
    places: list[tuple[int, set[str], Span, int]] = []

    def owner(clause: int) -> int:
        return named if named >= 0 and clause in clauses[named] else -1

    said_places: list[Said] = []
    place_subject = False  # the run before was a place or the picture as a clause's subject: "The background is …"
    for k, (lead, run, after) in enumerate(runs):
        noun = text[run[-1][0]:run[-1][1]].lower()
        first = text[run[0][0]:run[0][1]].lower()
        determined = bool(lead) and lead[-1] in _DETERMINERS
        clause += any(w in _CLAUSE_MARKS for w in lead)
        if len(run) == 1 and after in _DETERMINERS | {"it", "them"} and noun in _MEDIA | _PROPERTIES | {
                "place", "position"} and (
                not lead or lead[-1] not in _DETERMINERS):
            touching = False
            continue  # a verb: "Place a …", "Render a …", "would you mind drawing a …", "colour it blue"
        if (after == ":" or (after == "=" and len(run) == 1)) and noun not in _PLACES | _MEDIA | set(_PLACE_SIDES):
            touching = touching and all(not w[:1].isalnum() for w in lead)
            labels += run
            continue  # a label: "Brief: …", "obj1: …", "color=red"
        if [w for w in lead if w not in _DETERMINERS][-1:] in (["no"], ["without"]):
            unsaid += run  # "no gradients", "without a border": nothing drawn
            pending, attached, touching = (), False, False
            continue
        to_frame = bool(lead) and (lead[-1] in _RELATION_SIDES or (
            len(lead) >= 2 and lead[-1] in _DETERMINERS and lead[-2] in _RELATION_SIDES))
        frame = noun in _MEDIA and (after in _FRAME_AFTER or to_frame or (
            len(run) == 1 and bool(_FRAME_LEAD & set(lead))))
        part_of_frame = noun in _FRAME_PARTS and ((after == "of" and k + 1 < len(runs) and (
            text[runs[k + 1][1][-1][0]:runs[k + 1][1][-1][1]].lower() in _MEDIA)) or (  # "at the foot of the page"
            len(run) == 1 and lead[-2:] in (["at", "the"], ["on", "the"]) and after in _CLAUSE_ENDS))  # "at the base"
        if inside and len(run) == 1 and lead in (["of", "the"], ["of"]):
            inside = False
            unsaid += run
            continue  # "in the top half of the box": the frame it is in
        inside = _is_place([text[a:b].lower() for a, b in run], after) and after == "of" and (
            text[run[-1][0]:run[-1][1]].lower() in _INSIDE)
        is_place = _is_place([text[a:b].lower() for a, b in run], after)
        if frame:
            unsaid += run  # the picture and the words describing it ("a minimalist flat design illustration")
        if frame and to_frame:
            # a relation to the frame is a place: "to the left of the image" = on the left
            side = _RELATION_SIDES[lead[-1] if lead[-1] in _RELATION_SIDES else lead[-2]]
            relations = [r for r in relations if r[0] != k]
            phrase = max((x for x in said if x.span[1] <= run[0][0]), key=lambda x: x.span)
            said.remove(phrase)
            begin = phrase.span[0]
            places.append((clause, {side}, (begin, run[-1][1]), owner(clause)))
            said_places.append(Said(side, (begin, run[-1][1])))
        elif part_of_frame:  # "at the foot of the page": at the bottom
            side = _FRAME_PARTS[noun]
            places.append((clause, {side}, _place(text, lead, leads[k], run).span, owner(clause)))
            said_places.append(Said(side, places[-1][2]))
        elif is_place:
            place = _place(text, lead, leads[k], run)
            own_lead = lead[max((i + 1 for i, w in enumerate(lead) if w in _CLAUSE_MARKS), default=0):]
            moving = [w for w in own_lead if w in _MOTION]
            if place.meaning in _SIDE_RELATION and objects and moving and all(clause not in own for own in clauses) \
                    and not {"it", "them"} & set(own_lead[own_lead.index(moving[-1]):]):  # (not "move it to the top")
                # directions: "Find A, then go a bit to the left and you'll see B": B left of A (and, with no
                # object ahead, a place: "Where did A go? It's all the way down at the bottom")
                relations = sorted([*relations, (k, _SIDE_RELATION[place.meaning], True, None, place.span)],
                                   key=lambda r: r[0])
                places.append((clause, {text[a:b].lower() for a, b in run} | set(lead), place.span, -1))
                said_places.append(place)
            elif "its" in lead and place.meaning in _SIDE_RELATION and objects:
                # a place of the object named before: "put A to its left" = A left of it; with "it" before "its"
                # in the clause, "it" names the other one: "A shouldn't be right of B, it should be on its left"
                meaning = _SIDE_RELATION[place.meaning]
                subject = own_lead[:own_lead.index("its")] if "its" in own_lead else []
                it_subject = any(w == "it" and (i == 0 or subject[i - 1] not in _PREPOSITIONS)
                                 for i, w in enumerate(subject))
                if it_subject:
                    meaning = _INVERSE[meaning]
                ahead = []  # the runs after it to the sentence's end
                for later_lead, later_run, _ in runs[k + 1:]:
                    if any(w in (".", "!", "?", ";") for w in later_lead):
                        break
                    ahead.append([text[a:b].lower() for a, b in later_run])
                # "A beside B, to its right": in a clause of its own after both, "its" is the one named last
                if not it_subject and len(objects) >= 2 and clause not in clauses[named] and _BESIDE.search(
                        text[:place.span[0]]) and all(_is_place(r, "") for r in ahead):
                    meaning = _INVERSE[meaning]
                relations = sorted([*relations, (k, meaning, True, False, place.span)], key=lambda r: r[0])
                said.append(Said(meaning, place.span))
            else:
                places.append((clause, {text[a:b].lower() for a, b in run} | set(lead), place.span, owner(clause)))
                said_places.append(place)
        if is_place or frame or part_of_frame:
            pending, attached, touching = (), False, False
            place_subject = all(w in _DETERMINERS or w in _CLAUSE_MARKS or w == ":" for w in lead)
            continue
        subject_before, place_subject = place_subject, False
        describes = objects and not determined and bool(lead) and not subject_before and (
            any(w in _POSTNOMINAL for w in lead) or (attached and lead[-1] in ("and", ","))
            or (noun in _PROPERTIES and lead[-1] == "of")
            # one word set off by commas after an object named with its article: "a square, red, at the top"
            or (lead == [","] and len(run) == 1 and introduced and after in _CLAUSE_ENDS)
            # one word ending a clause after "it", which names the object before: "… and colour it blue." (not
            # after a verb of placing or keeping: "keep it bold" says how the picture looks, unless the vocabulary
            # holds the word as a modifier: "… Keep it orange.")
            or (lead[-1] == "it" and not (len(lead) >= 2 and lead[-2] in _PLACING | _KEEPING and not (
                lead[-2] in _KEEPING and modifier is not None and len(run) == 1 and modifier(noun))) and (
                (len(run) == 1 and after in _CLAUSE_ENDS)
                # … or before "and", words the vocabulary holds as modifiers: "make it yellow and put it …"
                or (modifier is not None and after == "and" and all(modifier(text[a:b].lower()) for a, b in run))))
            # a property and its value after a mark: "a star, colour orange", "a circle; size: large"
            or (first in _PROPERTIES and len(run) > 1 and not lead[-1][:1].isalnum())
            # a word the vocabulary holds as a modifier only, after an object (or a word describing it) and marks
            # or labels alone: "square, cyan", "Shape: diamond. Colour: green.", "shape=star, color=red"
            or (modifier is not None and len(run) == 1 and touching and all(not w[:1].isalnum() for w in lead)
                and modifier(noun)))
        if describes and noun in _PROPERTIES:  # "a box of red colour": red describes the box
            run = run[:-1]
        elif describes and first in _PROPERTIES and len(run) > 1:  # "…, colour orange": orange describes it
            run = run[1:]
        if describes:
            last = objects[named]
            objects[named] = NounPhrase(last.modifiers + tuple(run), last.noun)
            attached = touching = True
            continue
        attached = False
        if modifier is not None and not objects and len(run) == 1 and lead[-1:] and lead[-1] in _COPULAS and (
                modifier(noun)):
            unsaid += run  # "When I was little, …": no object yet to describe, and none named
            continue
        next_lead, next_run, next_after = runs[k + 1] if k + 1 < len(runs) else ([], [], "")
        next_noun = text[next_run[-1][0]:next_run[-1][1]].lower() if next_run else ""
        set_off = len(next_run) == 1 and next_after in _CLAUSE_ENDS  # "a square, red, …": red describes it
        next_first = text[next_run[0][0]:next_run[0][1]].lower() if next_run else ""
        if determined and len(run) == 1 and after == "," and next_lead == [","] and next_noun not in _PLACES \
                and next_first not in _PROPERTIES and not set_off:
            # "a crimson, big square": crimson describes the square (not "a purple star, vector illustration")
            pending += tuple(run)
            touching = False
            continue
        words = [text[a:b].lower() for a, b in run[:-1]]
        earlier = [g for g, o in enumerate(objects) if text[o.noun[0]:o.noun[1]].lower() == noun
                   and set(words) <= {text[a:b].lower() for a, b in o.modifiers}]
        if lead and lead[-1] == "the" and not earlier and len(objects) == 1 and len(run) == 1 and (
                noun in _REFERENCE_NOUNS - {"one"}):
            earlier = [0]  # "…, lots of room above the shape": the one object named before
        if lead and lead[-1] == "the" and earlier:  # "…, the circle above the square": named again
            mentions.append((k, earlier[-1]))
            named = earlier[-1]
            clauses[named].add(clause)
            again += run
        else:
            objects.append(NounPhrase(pending + tuple(run[:-1]), run[-1]))
            mentions.append((k, len(objects) - 1))
            named = len(objects) - 1
            introduced = determined
            clauses.append({clause})
        pending, touching = (), True
    nouns = [o.noun for o in objects] + again
    denied = sorted(x.span for x in (*said, *said_places) if _denied(text, x.span, nouns))
    relations = [r for r in relations if r[4] not in denied]
    places = [p for p in places if p[2] not in denied]
    said = [x for x in said if x.span not in denied]
    said_places = [x for x in said_places if x.span not in denied]
    relation, plain = None, True
    if len(objects) >= 2:
        relation, plain = _relation(relations, mentions)
        if relation is None:
            beside = bool(_BESIDE.search(text.lower()))
            relation, plain = _relation_of_places(places, clauses, beside), True
        if relation is None and len(objects) == 2 and len(reading := _READING_ORDER.findall(text.lower())) == 1:
            relation, plain = _ORDER_RELATION[reading[0]], False  # "row: [A, B] // left to right": A left of B
    return PromptPhrases(tuple(objects), relation, tuple(said), tuple(said_places), plain, tuple(again),
                         tuple(labels), tuple(sorted(denied + unsaid)))


def resolve_references(text: str) -> str:
    """``text`` with each phrase that names an object named before it by order, by one of its modifiers or by its
    side — "the first one", "the former", "the second one", "the latter", "the other (one)", "the red one", "the
    lower shape", "the shape" — replaced by "the" and that object's own words, so that `parse_phrases` reads it as
    that object named again: "There should be a red circle and a blue square. The first one needs to sit higher up
    than the second one" → "… The red circle needs to sit higher up than the blue square"; "Put a diamond below a
    square. The lower one is purple" → "… The diamond is purple". Only where the objects before it make it one
    object: an order or "other" names one of the last two named (the other of the two than the reference before
    it), a side one of exactly two, on the side their relation puts it; a modifier, the one object holding it; a general
    noun alone ("the shape", "the object"), the one object named before. A side one followed by "is" or a colon and
    a new object is the place of that object ("the lower one is a triangle" → "at the bottom is a triangle"). An
    ordinal before a content word ("the first red circle") is no reference; the rest of the text stays."""
    start, last = 0, None
    while True:
        words = [m for m in _WORD.finditer(text) if m.start() >= start]
        for i, the in enumerate(words[:-1]):
            if the.group().lower() != "the":
                continue
            word = words[i + 1].group().lower()
            after = words[i + 2].group().lower() if i + 2 < len(words) else ""
            end = words[i + 2] if after in _REFERENCE_NOUNS else words[i + 1]
            alone = after in _REFERENCE_NOUNS or not after or is_function_word(after)
            general = word in _REFERENCE_NOUNS - {"one"} and (not after or is_function_word(after))  # "the shape"
            if not ((word in _ORDINAL_REFERENCES or word == "other") and alone or after in _REFERENCE_NOUNS
                    or general):
                continue  # no reference ("the circle", "the top"): the text before it need not be parsed
            then = [w.group().lower() for w in words[i + 3:i + 5]] + ["", ""]
            if word in _SIDE_REFERENCES and after in _REFERENCE_NOUNS and then[0] in _COPULAS | {":"} and (
                    then[1] in ("a", "an", "one")):
                # "the lower one is a white triangle, and the upper one is a red square": at the bottom is …
                side = _SIDE_REFERENCES[word]
                replacement = ("on the " if side in ("left", "right") else "at the ") + side
                text = text[:the.start()] + replacement + text[end.end():]
                start = the.start() + len(replacement)
                break
            parsed = parse_phrases(text[:the.start()])
            objects = parsed.objects
            target = None
            pair = (len(objects) - 2, len(objects) - 1)  # the last two named: "the first one" is the former
            if general:
                target = 0 if len(objects) == 1 else None
            elif word in _ORDINAL_REFERENCES and alone and len(objects) >= 2:
                target = pair[_ORDINAL_REFERENCES[word]]
            elif word == "other" and alone and len(objects) >= 2 and last in pair:
                target = pair[1 - pair.index(last)]
            elif after in _REFERENCE_NOUNS:
                holding = [g for g, o in enumerate(objects)
                           if word in {text[a:b].lower() for a, b in o.modifiers}]
                if len(holding) == 1:
                    target = holding[0]
                elif word in _SIDE_REFERENCES and len(objects) == 2 and parsed.relation is not None:
                    side = _RELATION_SIDES[parsed.relation]  # where the relation puts object 0
                    target = {side: 0, _OPPOSITE[side]: 1}.get(_SIDE_REFERENCES[word])
            if target is None:
                continue
            named = objects[target]
            after_noun = [m for m in named.modifiers if m[0] > named.noun[0]]  # "a cross figure in purple"
            said = " ".join(text[a:b] for a, b in (*after_noun, *(m for m in named.modifiers if m not in after_noun),
                                                   named.noun))  # "the purple cross figure", not "cross purple"
            replacement = the.group() + " " + said
            text = text[:the.start()] + replacement + text[end.end():]
            start, last = the.start() + len(replacement), target
            break
        else:
            return text


def clock_places(text: str) -> str:
    """``text`` with each place said as a clock's hour on one side said as that side: "at twelve o'clock" → "at the
    top", "at 3 o'clock" → "on the right", "at six o'clock" → "at the bottom", "at nine o'clock" → "on the left"
    (hours between two sides stay as written)."""
    return _CLOCK.sub(lambda m: SIDE_PHRASES[_CLOCK_SIDES[m.group(1).lower()]], text)


def drop_corrections(text: str) -> str:
    """``text`` without each place or relation that the words right after it take back for another ("no wait",
    "sorry", "I mean", "or rather" …): "a blue triangle on the left no wait the right side" → "a blue triangle the
    right side"; "a square on top of, sorry, underneath a cross" → "a square underneath a cross". Only where the
    words taken back end right before them and a place or relation starts right after them ("…, sorry for the
    trouble" takes nothing back)."""
    start = 0
    while (m := _CORRECTION.search(text, start)) is not None:
        start = m.end()
        before = parse_phrases(text[:m.start()])
        taken = max((x.span for x in (*before.relations, *before.places)), default=None)
        after = parse_phrases(text[m.end():])
        instead = min((x.span for x in (*after.relations, *after.places)), default=None)
        if taken is None or instead is None or text[taken[1]:m.start()].strip(" ,;:.!—–-") or not all(
                is_function_word(w.lower()) for w in _WORD.findall(text[m.end():m.end() + instead[0]])):
            continue
        text = text[:taken[0]] + text[m.end():]
        start = taken[0]
    return text


def _denied(text: str, span: Span, nouns: list[Span]) -> bool:
    """Whether the place or relation at ``span`` is said not to hold: a negation before it in its clause ("not in
    the middle", "I don't want it centred"), a word of emptiness before it with no object between ("negative space
    to the right", "lots of room above it"), one ending its clause after it ("the left half stays empty",
    "leaving the left open"), or a clause right after it that says it is wrong ("… at the top, that's wrong")."""
    words = [(m.group().lower(), m.span()) for m in _WORD.finditer(text)]
    before = [(w, s) for w, s in words if s[1] <= span[0]]
    after = [(w, s) for w, s in words if s[0] >= span[1]]
    cut = max((i + 1 for i, (w, _) in enumerate(before) if w in _CLAUSE_MARKS | {"—", "–", ":"}), default=0)
    before = before[cut:]
    end = next((i for i, (w, _) in enumerate(after) if w in _CLAUSE_ENDS | _CLAUSE_MARKS), len(after))
    following = [w for w, _ in after[end + 1:]]  # the clause after its own: "…, that's wrong"
    following = following[:next((i for i, w in enumerate(following) if w in _CLAUSE_ENDS | _CLAUSE_MARKS),
                                len(following))]
    after = [w for w, _ in after[:end]]
    if any(w in _NEGATIONS or w.endswith("n't") for w, _ in before):
        return True
    if any(w in _EMPTY_BEFORE and not any(s[1] <= a < span[0] for a, _ in nouns) for w, s in before):
        return True
    if [w for w in following if w not in {"that", "that's", "this", "it", "it's", "is", "was", "all"}] in (
            ["wrong"], ["incorrect"], ["not", "right"], ["not", "what", "i", "want"]):
        return True  # "the last one came out at the top, that's wrong"
    while after and after[0] in _BEING | _DETERMINERS | _MEDIA | {"of"}:  # "… of the frame stays empty"
        after.pop(0)
    return len(after) == 1 and after[0] in _EMPTY_AFTER


def _than_follows(items: list[tuple[str, str, Span]], i: int) -> bool:
    """Whether "than" follows the comparative at ``items[i]`` in its clause before any content word but the picture
    ("A should be higher in the picture than B": a relation between A and B, not one pointing back)."""
    for kind, word, _ in items[i + 1:]:
        if word == "than":
            return True
        if word in _CLAUSE_MARKS or (kind == "content" and word not in _MEDIA):
            return False
    return False


# Words after which a side ends a run, as at a clause's end ("a red star centered in the canvas", "… top pls")
_RUN_ENDS = (_PREPOSITIONS - {"of"}) | {"and", "horizontally", "vertically", "please", "pls", "plz"}


def _close_run(text: str, runs: list, leads: list, lead: list[str], lead_spans: list[Span], spans: list[Span],
               after: str) -> None:
    """Add a run of content words to ``runs`` (with its ``lead``), as two where it ends a clause in words of a side
    after others ("a yellow square right, …", "a blue cross top row, …": the square, then the place "right"; not
    "… right in the middle"), starts with a side after "on" or "at" ("… on top cyan diamond …": the place "top",
    then the diamond), or ends in a key before "=" ("shape=star color=red": the star, then the key "color")."""
    words = [text[a:b].lower() for a, b in spans]
    firm = set(_PLACE_SIDES) - _LOOSE_SIDES
    split = len(words)
    while split > 0 and words[split - 1] in _PLACES | set(_PLACE_SIDES) | _SIDED_PLACES:
        split -= 1
    if 1 < split < len(words) and words[split - 1] in _MEDIA and words[split] in _PLACE_SIDES:
        split -= 1  # "a cyan star frame left": the star, then the place "frame left"
    tail = words[split:]
    sided = bool(tail) and (tail[-1] in firm or (tail[-1] in _PLACES | _SIDED_PLACES and bool(firm & set(tail))))
    if not (0 < split < len(words) and sided and words[split - 1] not in _PROPERTIES | _MEDIA and (
            after in _CLAUSE_ENDS | _RUN_ENDS or (after[:1] and not after[0].isalnum() and after not in "([{=:'\"-")
            or (after == "of" and len(tail) > 1 and tail[-1] in _PLACES | _SIDED_PLACES))):
        split = len(words) - 1 if after == "=" else 0  # "star color=orange": the star, then the key "color"
    if split == 0 and len(words) > 1 and lead[-1:] in (["on"], ["at"], ["its"]) and words[0] in firm and not any(
            w in _PLACES | set(_PLACE_SIDES) | _SIDED_PLACES | _MEDIA for w in words[1:]):
        split = 1  # "red square on top cyan diamond on the bottom", "… and to its right drifted a red diamond"
    if split == 0 and [w for w in lead if w not in _DETERMINERS][-1:] in (["on"], ["at"], ["in"], ["to"]):
        ends = [j for j, w in enumerate(words[:-1]) if w in _PLACES | _SIDED_PLACES and (firm & set(words[:j + 1]))
                and words[j + 1] not in _PLACES | set(_PLACE_SIDES) | _SIDED_PLACES | _MEDIA]
        split = ends[0] + 1 if ends else 0  # "on the LEFT side lol": the place, then the rest
    if split > 0:
        runs.append((lead, spans[:split], ""))
        leads.append(lead_spans)
        lead, lead_spans, spans = [], [], spans[split:]
    runs.append((lead, spans, after))
    leads.append(lead_spans)


def _is_place(words: list[str], after: str) -> bool:
    """Whether a run of content words (lower case), followed by ``after``, names a place, not an object: its noun a
    noun of place ("the left side", "the top"), or a word of a side with a noun that names a place with one ("its
    middle point") or the picture ("centered composition"), or words of a side alone ("… (upper)"; not "the lower
    one")."""
    sided = any(w in _PLACE_SIDES for w in words[:-1])
    return words[-1] in _PLACES or (sided and words[-1] in _SIDED_PLACES | _MEDIA) or (
        all(w in _PLACE_SIDES for w in words) and after not in _REFERENCE_NOUNS)


def _place(text: str, lead: list[str], lead_spans: list[Span], run: list[Span]) -> Said:
    """The place phrase of a run that names a place: the run with the prepositions and articles right before it
    ("up at the top", "in the very middle"), and the one side its words name (None for none or several)."""
    start = len(lead)
    while start > 0 and lead[start - 1] in _PREPOSITIONS | _DETERMINERS:
        start -= 1
    begin = lead_spans[start][0] if start < len(lead) else run[0][0]
    words = lead[start:] + [text[a:b].lower() for a, b in run]
    sides = {_PLACE_SIDES[w] for w in words if w in _PLACE_SIDES}
    return Said(sides.pop() if len(sides) == 1 else None, (begin, run[-1][1]))


# A place's words → (axis, side): axis 0 vertical, 1 horizontal; side −1 top/left, +1 bottom/right.
_SIDES = {w: {"top": (0, -1), "bottom": (0, 1), "left": (1, -1), "right": (1, 1)}[side]
          for w, side in _PLACE_SIDES.items() if side != "centre"}
_SIDE_RELATIONS = {(0, -1): "above", (0, 1): "below", (1, -1): "left of", (1, 1): "right of"}


def _relation_of_places(places: list[tuple[int, set[str], Span, int]], clauses: list[set[int]], beside: bool = False
                        ) -> str | None:
    """The relation of object 0 to object 1 that their places state when each is named in clauses of its own
    with a place on the same axis at opposite sides: "a red circle at the top, a blue square at the bottom"
    (A above B), "on the left a cat and on the right a dog" (A left of B), "A and B, the A on the right and the
    B on the left" (A right of B); with ``beside`` (the prompt puts them side by side: "next to", "beside"), a
    left or right side of one of them alone: "A next to B, with A on the left" (A left of B). Failing those, the
    places each object is followed by within a clause they share: "red circle on top blue square on the bottom"."""

    def side(chosen: list[set[str]]) -> tuple[int, int] | None:
        found = {_SIDES[w] for words in chosen for w in words if w in _SIDES}
        return found.pop() if len(found) == 1 else None

    def opposite(a: tuple[int, int] | None, b: tuple[int, int] | None) -> str | None:
        if beside and (a is None) != (b is None) and (a or b)[0] == 1:  # one side, left or right
            a, b = (a, (1, -a[1])) if a is not None else ((1, -b[1]), b)
        if a is None or b is None or a[0] != b[0] or a[1] == b[1]:
            return None
        return _SIDE_RELATIONS[a]

    by_clause = opposite(*(side([words for cl, words, _, _ in places if cl in own])
                           for own in (clauses[0] - clauses[1], clauses[1] - clauses[0])))
    return by_clause or opposite(*(side([words for _, words, _, g in places if g == own]) for own in (0, 1)))


def _relation(relations: list[tuple[int, str, bool, bool | None, Span]], mentions: list[tuple[int, int]]
              ) -> tuple[str | None, bool]:
    """The relation of object 0 to object 1 stated by the first relation word between mentions of two
    different objects ("A above B"), or before them ("above B there is A": A above B). A relation word that
    points back ("beneath it", "below that one") says where the object named right before it in its clause
    lies against the one named before that ("A with B beneath it", "A on top, B below it": B below A), or
    else the object named next, or else the one named last ("A and, beneath it, B", "There's A. Below that one,
    add B": B below A). With it, whether it was said between the two (None, True when none is)."""
    for position, found, back, close, _ in relations:
        before = [g for k, g in mentions if k < position]
        after = [g for k, g in mentions if k >= position]
        plain = False
        if back:
            in_clause = close and before and position - 1 in {k for k, _ in mentions}
            subject = before[-1] if in_clause else after[0] if after else (
                before[-1] if before and close is not None else None)  # (None: directions, to the object ahead)
            ref = next((g for g in reversed(before) if g != subject), None)
            if subject is None or ref is None:
                continue
            pair = (subject, ref)
        elif before and after and before[-1] != after[0]:
            pair, plain = (before[-1], after[0]), True
        elif not before and after and any(g != after[0] for g in after):
            pair = (next(g for g in after if g != after[0]), after[0])
        elif before and not after and any(g != before[-1] for g in before):  # "A and B, the A above"
            pair = (before[-1], next(g for g in reversed(before) if g != before[-1]))
        else:
            continue
        if pair == (0, 1):
            return found, plain
        if pair == (1, 0):
            return _INVERSE[found], plain
    return None, True
