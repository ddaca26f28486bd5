"""Misspelt words: whether English knows a word, and which words are one edit away from it.

Most misspellings are one edit away from the word meant — a letter left out, one added, one changed, or two
neighbours swapped (Damerau 1964 found about 80% so) — and a prompt written in a hurry holds them ("a red cirlce
abvoe a blue sqaure"). A text encoder splits such a word into pieces that mean something else; `ldmkit.text.
known_words` reads it as the word it was meant as instead, using these two questions:

- `edits`: every string one edit away from a word (Damerau–Levenshtein distance 1); `distance`: the optimal string
  alignment distance between two words (the same edits, each substring edited once);
- `CLOSED_CLASS`: the English words of closed classes that WordNet leaves out (it holds nouns, verbs, adjectives
  and adverbs only): pronouns, auxiliaries, articles, conjunctions, prepositions — so that a word is known as
  English when WordNet holds it (`ldmkit.text.wordnet.WordNet.is_word`) or it is one of these.
"""

from __future__ import annotations

import string

# Closed-class English words WordNet 3.0 does not hold (it has "can", "will", "may", "might", "here", "there" …)
CLOSED_CLASS = frozenset("""
a an the this that these those each every either neither another such what which whichever whatever who whom
whose whoever i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it
its itself we us our ours ourselves they them their theirs themselves one's someone somebody something anyone
anybody anything everyone everybody everything nobody nothing none
am is are was were be been being do does did done doing have has had having shall should would could must ought
won't wouldn't shouldn't couldn't can't cannot don't doesn't didn't isn't aren't wasn't weren't haven't hasn't
i'm i'd i'll i've you're you'd you'll you've he's she's it's we're we'd we'll we've they're they'd they'll
they've that's there's here's what's who's let's
and or but nor so yet because although though while whereas if unless until since than whether as
of in on at to by for from with without within into onto upon about above below under over after before between
among amongst through throughout during against toward towards along across around behind beside besides beneath
underneath beyond near inside outside via per amid
not no yes please thanks pls plz
when whenever where wherever why how once till um uh er erm hmm ok okay
""".split())

_LETTERS = string.ascii_lowercase


def edits(word: str) -> set[str]:
    """Every string one edit away from ``word`` (lower case a–z): one letter deleted, two neighbours swapped, one
    letter changed, one letter inserted."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deleted = {a + b[1:] for a, b in splits if b}
    swapped = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    changed = {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
    inserted = {a + c + b for a, b in splits for c in _LETTERS}
    return (deleted | swapped | changed | inserted) - {word}


def distance(a: str, b: str) -> int:
    """The optimal string alignment distance of ``a`` and ``b``: the fewest deletions, insertions, changes and
    swaps of two neighbouring letters that turn one into the other, no substring edited twice."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], previous2[j - 2] + 1)
        previous2, previous = previous, row
    return previous[-1]
