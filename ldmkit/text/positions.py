"""Places said in numbers, file names and symbols, said again in words the chunker reads (`ldmkit.text.phrases`).

A position in numbers names a point (u, v) of the picture, u across from its left edge and v down from its top,
each in [0, 1]; its place is the side its larger offset from the centre points to, or the centre where both
offsets are under `CENTRE` (one axis alone at its middle, "halfway up", says no side and stays as written):

    place(u, v) = centre                               if max(|u − ½|, |v − ½|) < CENTRE
                  left / right  (u < ½ / u > ½)        if |u − ½| ≥ |v − ½|
                  top / bottom  (v < ½ / v > ½)        otherwise

The forms read, each alone or several together for one point ("x=0.15, y=0.5"; "at 50% width and 50% height"),
an axis not given at ½:

- a share of the way along an axis: "85% of the way down", "one third of the way from the left", "y = 20% from the
  top", "at 30% width", "two thirds across";
- an axis set to a value: "x=0.15", "cy=96", "left: 10%", "top: 80%" (a value above 1 without "%" is in pixels of
  the canvas);
- a point in brackets: "at (100, 256)", "pixel (256, 460)" (x first, y down from the top);
- a cell of a grid: "cell B3 of a 3x3 grid" (columns lettered left to right, rows numbered top to bottom).

Pixels count only where the prompt gives the canvas ("on a 512x512 canvas", "a 512 px canvas", "SVG 512x512");
without it such a position stays as written, as does any number out of range. The words that state the
convention ("(normalised coordinates, x from the left)", "with y measured from the top", "on a 512 px canvas")
are left out once the positions are read, since they would read as places of their own; "y measured from the
bottom" turns v over.

`without_north_up` leaves out a map's "north up"; `side_compounds` reads a side said with the middle as that side
("bottom-middle", "centre-left"); `shorthand` writes a note-taker's shorthand for where in full ("@ btm", "lft",
"abv"); `file_words` reads a file name as words ("red_star_left.png" → "red star left"); and `without_symbols`
leaves out pictographs and other symbols ("✨", "👉", "⬆️"), which a prompt read as written takes as tokens the
captions never held; the words beside them say the same.
"""

from __future__ import annotations

import re
import unicodedata

from ldmkit.text.phrases import SIDE_PHRASES

CENTRE = 0.15  # offsets from the centre under this on both axes: the centre

_NUMBER = r"(\d+(?:\.\d+)?)"
_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
           "nine": 9}
_PARTS_OF = {"half": 2, "halves": 2, "third": 3, "quarter": 4, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
             "eighth": 8, "ninth": 9, "tenth": 10}
# "85%", "3/4", "two thirds", "nine tenths", "half"
_SHARE = (r"(?:(?P<pct>\d+(?:\.\d+)?)\s*%|(?P<frac>\d+)\s*/\s*(?P<den>\d+)|(?:(?P<count>"
          + "|".join(_COUNTS) + r")[\s-]+)?(?P<part>" + "|".join(_PARTS_OF) + r")s?(?=\b|way))")
_FROM = r"(?:(?:measured|counted)\s+)?from\s+the\s+(?P<edge>left|right|top|bottom)(?:\s+edge)?"
# "85% of the way down", "one third of the way from the left", "30% across", "at 50% width"
_ALONG = re.compile(
    r"(?:\b(?:about|around|roughly|approximately|some|at|exactly)\s+)*" + _SHARE
    + r"\s*(?:of\s+the\s+way\s+|way\s+)?(?:(?P<dir>down|up|across|along)\b(?:\s+(?:the|this)\s+(?:image|picture|canvas|"
    r"frame|page))?|" + _FROM + r"|(?:of\s+(?:the\s+)?)?(?P<dim>width|height)\b)", re.IGNORECASE)
# "x=0.15", "cy = 96", "left: 10%", "y = 20% from the top"
_AXIS = re.compile(r"\b(?P<axis>c?x|c?y|left|top)\s*[:=]\s*" + _NUMBER + r"\s*(?P<unit>%|px)?(?:\s+" + _FROM + ")?",
                   re.IGNORECASE)
# "at (100, 256)", "pixel (256, 460)"
_PAIR = re.compile(r"\(\s*" + _NUMBER + r"\s*(?:px)?\s*,\s*" + _NUMBER + r"\s*(?:px)?\s*\)")
_CELL = re.compile(r"\bcell\s+([A-Za-z])\s*(\d+)\b", re.IGNORECASE)
_GRID = re.compile(r"\b(\d+)\s*[x×]\s*(\d+)\s+grid\b", re.IGNORECASE)
_SIZE = re.compile(r"\b(\d{2,5})\s*(?:px\s*)?[x×]\s*(\d{2,5})\b|\b(\d{2,5})\s*(?:px|pixels?)\b", re.IGNORECASE)
_Y_UP = re.compile(r"\by\b[^.;()]*?\b(?:from|at)\s+the\s+bottom\b|\by(?:[\s-]+axis)?\s+(?:increas\w*|goes|going|grows|"
                   r"growing|points|pointing|runs|running)\s+up(?:wards)?\b", re.IGNORECASE)
# what joins two parts of one point: "x=0.15, y=0.5", "50% width and 50% height"
_JOIN = re.compile(r"\s*(?:,|and|,\s*and|/)?\s*", re.IGNORECASE)
_LEAD = re.compile(r"(?:\b(?:centred|centered|positioned|placed|located|sitting|sits)\s+)?"
                   r"(?:\b(?:at|to|in)\s+)?(?:\b(?:the\s+)?(?:pixel|position|point|coordinates?)\s+)?$", re.IGNORECASE)
_CONVENTION_WORDS = re.compile(r"\b(?:x|y|cx|cy|rows?|columns?|coordinates?|normali[sz]ed|counted|measured|grid|"
                               r"canvas|px|pixels?|clock)\b", re.IGNORECASE)
_ASIDE = re.compile(r"\s*\(([^()]*)\)")
_CONVENTION = re.compile(r"[,;]?\s*\b(?:with\s+)?(?:the\s+)?(?:x|y)(?:\s+axis)?\s+(?:is\s+|being\s+)?(?:measured|"
                         r"counted|increasing|going|goes|runs?|from)\b[^,;.()]*", re.IGNORECASE)
_CANVAS = re.compile(r"\s*\b(?:on|in)\s+(?:a|an|the)\s+\d+\s*(?:px\s*)?(?:[x×]\s*\d+\s*)?(?:px|pixels?)?\s*"
                     r"(?:canvas|image|picture|frame|artboard|page)\b"
                     r"|\s*\b(?:of|in|on)\s+(?:a|an|the)\s+\d+\s*[x×]\s*\d+\s+grid\b", re.IGNORECASE)
_FILE = re.compile(r"\b([A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)+)(?:\.(?:png|jpe?g|webp|gif|bmp|svg|tiff?))?\b"
                   r"|\b([A-Za-z0-9]+)\.(?:png|jpe?g|webp|gif|bmp|svg|tiff?)\b", re.IGNORECASE)
_SKIN_AND_JOINERS = {"\u200d", "\ufe0f", "\ufe0e", "\u20e3"}
# where-words that shorthand may drop the vowels of (`shorthand`)
WHERE = ("left", "right", "top", "bottom", "centre", "center", "middle", "above", "below", "under", "over", "next",
         "beside", "upper", "lower", "corner", "edge")
_SAME_WHERE = {"centre": "center"}
_MIDDLE = r"(?:middle|centre|center|central)"
_NORTH = r"north(?:\s+arrow)?(?:\s+(?:is|pointing|points|facing))?\s+(?:up|upwards|at\s+the\s+top)"
_NORTH_UP = re.compile(rf"[,;]?\s*\(\s*{_NORTH}\s*\)|\b(?:with\s+)?(?:the\s+)?{_NORTH}\b", re.IGNORECASE)
_SIDE_COMPOUND = re.compile(rf"\b(top|bottom|left|right|upper|lower)[- ]{_MIDDLE}\b|"
                            rf"\b{_MIDDLE}[- ](top|bottom|left|right)\b", re.IGNORECASE)


def place(u: float, v: float) -> str:
    """The place phrase of the point (u, v) (module docstring): "on the left", "at the top", "in the centre" …"""
    du, dv = u - 0.5, v - 0.5
    if max(abs(du), abs(dv)) < CENTRE:
        return SIDE_PHRASES["centre"]
    if abs(du) >= abs(dv):
        return SIDE_PHRASES["left" if du < 0 else "right"]
    return SIDE_PHRASES["top" if dv < 0 else "bottom"]


def _share(m: re.Match) -> float:
    if m.group("pct") is not None:
        return float(m.group("pct")) / 100
    if m.group("frac") is not None:
        return int(m.group("frac")) / max(int(m.group("den")), 1)
    return _COUNTS[(m.group("count") or "one").lower()] / _PARTS_OF[m.group("part").lower()]


def _canvas(text: str) -> tuple[float, float] | None:
    for m in _SIZE.finditer(text):
        if _GRID.match(text, m.start()):
            continue
        if m.group(3) is not None:
            return float(m.group(3)), float(m.group(3))
        return float(m.group(1)), float(m.group(2))
    return None


def _parts(text: str) -> list[tuple[int, int, float | None, float | None]]:
    """Each position part in ``text``: (start, end, u or None, v or None), in text order; v down from the top."""
    canvas = _canvas(text)
    y_up = _Y_UP.search(text) is not None
    parts = []

    def flip_v(v: float | None) -> float | None:
        return None if v is None else (1 - v if y_up else v)

    for m in _ALONG.finditer(text):
        f = _share(m)
        edge, way, dim = (m.group(g) and m.group(g).lower() for g in ("edge", "dir", "dim"))
        u = f if edge == "left" or way in ("across", "along") or dim == "width" else 1 - f if edge == "right" else None
        v = f if edge == "top" or way == "down" else 1 - f if edge == "bottom" or way == "up" else None
        v = flip_v(f) if dim == "height" else v
        parts.append((m.start(), m.end(), u, v))
    for m in _AXIS.finditer(text):
        value, unit, edge = float(m.group(2)), m.group("unit"), (m.group("edge") or "").lower()
        horizontal = m.group("axis").lower() in ("x", "cx", "left")
        if unit == "%":
            value /= 100
        elif value > 1 or unit == "px":
            if canvas is None:
                continue
            value /= canvas[0 if horizontal else 1]
        if horizontal:
            parts.append((m.start(), m.end(), 1 - value if edge == "right" else value, None))
        else:
            v = 1 - value if edge == "bottom" else value if edge == "top" else flip_v(value)
            parts.append((m.start(), m.end(), None, v))
    for m in _PAIR.finditer(text):
        x, y = float(m.group(1)), float(m.group(2))
        if max(x, y) > 1:
            if canvas is None:
                continue
            x, y = x / canvas[0], y / canvas[1]
        parts.append((m.start(), m.end(), x, flip_v(y)))
    grid = _GRID.search(text)
    if grid is not None:
        columns, rows = int(grid.group(1)), int(grid.group(2))
        for m in _CELL.finditer(text):
            column, row = ord(m.group(1).upper()) - ord("A"), int(m.group(2)) - 1
            if 0 <= column < columns and 0 <= row < rows:
                parts.append((m.start(), m.end(), (column + 0.5) / columns, (row + 0.5) / rows))
    parts = [p for p in parts if all(c is None or 0 <= c <= 1 for c in p[2:])]
    parts.sort()
    kept = []
    for p in parts:  # one reading of each stretch of text: the first, longest
        if not kept or p[0] >= kept[-1][1]:
            kept.append(p)
    return kept


def number_places(text: str) -> str:
    """``text`` with each position said in numbers said as its place (module docstring): "a star centred at x=0.15,
    y=0.5" → "a star on the left"; "A at (100, 256) and B at (400, 256) on a 512 px canvas" → "A on the left and B on
    the right"; "B one third of the way down and A 85% of the way down" → "B at the top and A at the bottom". The
    words stating the convention go with them; a text with no position read is returned as it is."""
    parts = _parts(text)
    if not parts:
        return text
    points = []  # (start, end, u, v): parts joined by a comma or "and" with no axis twice are one point
    for start, end, u, v in parts:
        if points and _JOIN.fullmatch(text[points[-1][1]:start]) and (u is None or points[-1][2] is None) and (
                v is None or points[-1][3] is None):
            s, _, pu, pv = points[-1]
            points[-1] = (s, end, pu if u is None else u, pv if v is None else v)
        else:
            points.append((start, end, u, v))
    # the middle of one axis alone says no side ("halfway up the left side"): left as written
    points = [p for p in points if None not in p[2:] or abs(next(c for c in p[2:] if c is not None) - 0.5) >= CENTRE]
    if not points:
        return text
    out, last = "", 0
    for start, end, u, v in points:
        lead = _LEAD.search(text[last:start])
        out += text[last:last + lead.start()].rstrip() + " " + place(0.5 if u is None else u, 0.5 if v is None else v)
        last = end
    out += text[last:]
    out = _ASIDE.sub(lambda m: "" if _CONVENTION_WORDS.search(m.group(1)) else m.group(0), out)
    out = _CANVAS.sub("", _CONVENTION.sub("", out))
    out = _SIZE.sub(lambda m: "" if _GRID.match(out, m.start()) is None else m.group(0), out)
    out = re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s{2,}", " ", out))
    return out.strip()


def file_words(text: str) -> str:
    """``text`` with each file name or word joined by underscores read as words: "white_diamond_left.png" → "white
    diamond left", "red_cross_left_of_purple_square" → "red cross left of purple square"; hyphenated words stay."""
    def words(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return name.replace("_", " ") if "_" in name or m.group(0) != name else m.group(0)
    return _FILE.sub(words, text)


def shorthand(text: str) -> str:
    """``text`` with a note-taker's shorthand for where said in full: "@" → "at", "w/" → "with", "&" and a lone
    "+" → "and", and a word of `WHERE` written without its vowels, as in texting ("lft", "rt", "btm", "ctr",
    "abv", "blw", "nxt"): a token of plain letters with no vowel after its first, which begins with a where-word's
    first letter, ends with its last consonant and keeps its letters in order — of two letters, its first and last
    letters — and fits one where-word only (centre and center are one)."""
    text = re.sub(r"(?<=\s)@(?=\s*\w)|^@(?=\s*\w)", "at", text)
    text = re.sub(r"\bw/\s*(?=\w)", "with ", text)
    text = re.sub(r"(?<=\w)\s+[&+]\s+(?=\w)", " and ", text)
    return re.sub(r"\b[A-Za-z][b-df-hj-np-tv-zB-DF-HJ-NP-TV-Z]{1,3}\b", _where_word, text)


def without_north_up(text: str) -> str:
    """``text`` without a map's statement of which way is north ("north up", "(north arrow pointing up)", "with
    north at the top"), which says how to read the compass words, not where anything is."""
    if "north" not in text.lower():
        return text
    text = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s{2,}", " ", _NORTH_UP.sub("", text)))
    return re.sub(r",([.;:])", r"\1", text).strip()


def side_compounds(text: str) -> str:
    """``text`` with each side said with the middle as that side: "the bottom-middle square" → "the bottom square",
    "centre-left" → "left", "top center" → "top" (the picture has one middle; a corner, "top-left", stays)."""
    return _SIDE_COMPOUND.sub(lambda m: m.group(1) or m.group(2), text)


def _where_word(m: re.Match) -> str:
    token = m.group().lower()
    fits = {_SAME_WHERE.get(w, w) for w in WHERE if w != token and _abbreviates(token, w)}
    if len(fits) != 1:
        return m.group()
    word = fits.pop()
    return word.capitalize() if m.group()[0].isupper() else word


def _abbreviates(token: str, word: str) -> bool:
    last = re.sub(r"[aeiou]+$", "", word)[-1:]
    if token[0] != word[0] or token[-1] != last or (len(token) == 2 and word[-1] != last):
        return False
    rest = iter(word[1:])
    return all(c in rest for c in token[1:])


def without_symbols(text: str) -> str:
    """``text`` without pictographs and other symbols (Unicode category So, with their joiners and variation
    selectors, and the skin-tone modifiers): "👇 yellow star at the bottom ✨" → "yellow star at the bottom". Symbols
    between two words part them as a comma would ("yellow diamond ➡️ cyan circle" → "yellow diamond, cyan
    circle")."""
    marked = "".join("\0" if unicodedata.category(c) == "So" or c in _SKIN_AND_JOINERS
                     or 0x1F3FB <= ord(c) <= 0x1F3FF else c for c in text)
    if marked == text:
        return text
    marked = re.sub(r"^[\s\0]+|[\s\0]+$", "", marked)  # at either end: decoration
    marked = re.sub(r"([,;:.!?])?[\s\0]*\0[\s\0]*", lambda m: (m.group(1) or ",") + " ", marked)
    return re.sub(r"\s{2,}", " ", re.sub(r",\s*([,;:.!?\])])", r"\1", marked)).strip()
