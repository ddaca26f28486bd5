"""Prompts read in the words the model knows (`ldmkit.text.known_words`): a shipped model (the default unless
--model) on the held-out scenes of `ldmkit eval generate`, told in the templates, the seen and the unseen (never
trained on) part of the caption grammar, each as written and as the pipelines now read it, without and with binding
guidance. Writes ``benchmarks/KNOWN_WORDS.md``.

    python benchmarks/known_words.py [--model DIR] [--images 512] [--binding 0.3]

A phrasing whose prompts all stay as written (every word known) draws the same images either way, so only its
count of rewritten prompts is reported. Each measured row is one evaluation (ddim, 25 steps, guidance 4), kept as
JSON under ``--work``/the model's UNet digest: a stopped run goes on where it stopped (delete a JSON to redo its
row). A second table gives what each word of the grammar's held-out part becomes, and a third a few colour and
shape words from neither part.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import ldmkit
from ldmkit.data.shapes_captions import _WORDS
from ldmkit.eval.generation import evaluate_generation
from ldmkit.eval.heldout import heldout_shapes
from ldmkit.eval.report import percent
from ldmkit.pretrained import DEFAULT, resolve_model
from ldmkit.settings import GenerationSettings
from ldmkit.storage import write_text_atomic
from ldmkit.text.known_words import DEPTH, KnownWords
from ldmkit.text.wordnet import default_wordnet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import markdown_table, results_footer, unet_digest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PHRASINGS = ("templates", "seen", "unseen")
# Words of neither part of the grammar, for the third table: what a user might write (not measured on images)
OTHER_WORDS = ("vermilion", "maroon", "cerulean", "indigo", "saffron", "magenta", "olive", "beige", "sphere",
               "cube", "rectangle", "oval", "ellipse", "parallelogram", "gigantic", "minuscule")
OTHER_NOUNS = {"sphere", "cube", "rectangle", "oval", "ellipse", "parallelogram"}  # read as a phrase's noun
OTHER_SIZES = {"gigantic", "minuscule"}
SLOTS = {"color": ("a ", " circle"), "shape": ("a red ", ""), "size": ("a ", " red circle")}  # a word in a phrase


def read_as(known: KnownWords, word: str, kind: str, wordnet) -> str:
    """What the pipelines read ``word`` (a colour, shape or size word) as in a noun phrase (`KnownWords.read_words`:
    a colour name by its colour where the model recorded colours, else by WordNet)."""
    before, after = SLOTS[kind]
    read = re.sub(r"^an? ", "", known.read_words(before + word + after, wordnet))
    before = re.sub(r"^an? ", "", before)
    got = read[len(before):len(read) - len(after)] if read.startswith(before) and read.endswith(after) else read
    return "(as written)" if got == word else got


READS = {"written": "as written", "words": "known words", "known": "known words and phrasing"}


def measure(pipe, phrasing: str, binding: float, read: str, images: int, work: Path, progress: bool) -> dict:
    """One evaluation with prompts read ``read``: "written" (as given), "words" (the words of noun phrases alone,
    never re-said: `KnownWords.read_words`) or "known" (as the pipelines read them: `KnownWords.rewrite`)."""
    path = work / f"{phrasing}-{read}-binding{binding:g}-{images}.json"
    if path.is_file():
        return json.loads(path.read_text())
    words = pipe.model.known_words
    pipe.model.known_words = {"written": None, "words": KnownWords(words.words, words.objects, colours=words.colours),
                              "known": words}[read]
    try:
        report = evaluate_generation(pipe, images, GenerationSettings(binding=binding), progress=progress,
                                     phrasing=phrasing)
    finally:
        pipe.model.known_words = words
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(report.to_dict(), indent=2) + "\n")
    return report.to_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a model folder with known_words.json, or a shipped model's name "
                                              "(default: the default shipped model)")
    p.add_argument("--images", type=int, default=512, help="held-out scenes per phrasing (default 512)")
    p.add_argument("--binding", type=float, default=0.3, help="binding guidance λ of the guided rows (default 0.3)")
    p.add_argument("--work", default="runs/known-words-eval", help="where each row's JSON is kept")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "KNOWN_WORDS.md"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    wordnet = default_wordnet()
    if wordnet is None:
        p.error("WordNet is not installed: pip install 'ldmkit[words]'")
    pipe = ldmkit.load_pipeline(args.model)
    work = Path(args.work) / unet_digest(Path(resolve_model(args.model)))  # rows kept for this model alone
    known = pipe.model.known_words
    if known is None:
        p.error(f"{args.model or 'the shipped model'} records no training words (known_words.json)")

    rows = []
    for phrasing in PHRASINGS:
        captions = heldout_shapes(args.images, pipe.model.config.image_size, phrasing=phrasing).captions
        by_words = [known.read_words(c, wordnet) for c in captions]
        changed = {"words": sum(w != c for w, c in zip(by_words, captions)),
                   "known": sum(known.resay(w) != c for w, c in zip(by_words, captions))}
        resaid = sum(known.resay(w) != w for w in by_words)
        if not changed["known"]:
            rows.append([phrasing, "either", "–", f"0 of {len(captions)}", f"0 of {len(captions)}",
                         "(the same images as written)", "", "", ""])
            continue
        for binding in (0.0, args.binding):
            for read in READS:
                r = measure(pipe, phrasing, binding, read, args.images, work, not args.no_progress)
                acc = r["prompt_accuracy"]
                rows.append([phrasing, READS[read], f"λ = {binding:g}" if binding else "–",
                             "–" if read == "written" else f"{changed[read]} of {len(captions)}",
                             "–" if read != "known" else f"{resaid} of {len(captions)}",
                             f"**{percent(acc['one object']['all'])}**",
                             f"**{percent(acc['two objects']['all'])}**", percent(acc["all"].get("malformed")),
                             f"{r['metrics']['FID (shapes-cnn)']['value']:.1f}"])
                print(rows[-1], flush=True)

    held = [[word, meaning, kind, read_as(known, word, kind, wordnet)]
            for kind in ("color", "shape", "size") for meaning, words in _WORDS[kind]["unseen"].items()
            for word in words]
    other = [[word, read_as(known, word, "shape" if word in OTHER_NOUNS else "size" if word in OTHER_SIZES else "color",
                            wordnet)] for word in OTHER_WORDS]
    text = "\n".join([
        "# Prompts read in the words the model knows",
        "",
        (f"Model: `{args.model}`" if args.model else f"Model: `ldmkit/pretrained/{DEFAULT}` (the default)")
        + " with its `known_words.json` (the words of its "
        "training captions). *known words*: each word of a noun phrase that the training captions never held "
        "replaced, before encoding, by the nearest noun or modifier they did hold: a colour name by its colour "
        "(where the model recorded the colours its training images drew), any other word by WordNet (synonyms, then "
        f"more general words, at most {DEPTH} links up; a noun with none there, a known noun naming a kind of it, "
        "one link down; `ldmkit.text.known_words`), and nothing else; *known words and phrasing*: as the pipelines "
        "now read prompts (`ldmkit generate`, `eval generate`, the server): the same, then a prompt whose words "
        "outside its noun phrases hold one the captions never did is said again in their phrasing, from the "
        "chunker's parse (each object as determiner, modifiers, noun; two objects joined by the captions' most "
        "used phrase for the relation read between them, one object followed by theirs for its place: "
        "`KnownWords.resay`), where only closed-class words would be lost, or where it can be said so once what "
        "names nothing the model draws is left out (tags, labels, asides); *as written*: the prompt encoded as given "
        "(`--as-written`). The same held-out scenes of `ldmkit eval generate` "
        "(seed 1000003) in each phrasing; ddim, 25 steps, guidance 4; binding guidance with the best of 2 starting "
        "noises where the row says so (its groups from the prompt as read). The judge and the malformed share as "
        "in benchmarks/GROUNDING.md; FID on shapes-cnn features (512 images bias it upwards: compare within a "
        "phrasing). The rule holds no list of object words — WordNet's own relations and the model's training "
        "words — but its two settings (two links at most; only the words of noun phrases) were chosen while looking "
        "at what the held-out words became, and the chunker's English relation phrases include the held-out "
        "part's (\"higher than\", \"further left than\"), so read the unseen rows as this rule's result on them "
        "rather than a blind test; the last table lists words from neither part.",
        "",
        markdown_table(["phrasing", "read", "binding", "prompts rewritten", "re-said", "one object", "two objects",
                        "malformed", "FID"], rows),
        "",
        "## What each held-out word becomes",
        "",
        "The grammar's unseen part, word by word: the dataset's meaning beside what the pipelines read the word as "
        "in a noun phrase — a colour name the model never read by its colour (the lexicon's colour against the "
        "colours the training images drew its colour words in, `KnownWords.colour_reading`), any other word by "
        "WordNet's nearest known word. A word with neither stays as written, and the model reads it through the "
        "prompt model alone: WordNet holds \"lozenge\" only as a pill and \"plus sign\" as an arithmetic sign.",
        "",
        markdown_table(["word", "means here", "kind", "read as"], held),
        "",
        "## Words from neither part",
        "",
        "Colour, shape and size words a user might write, which no caption of either part holds (not measured on "
        "images; listed so that the rule's reach is seen beyond the grammar it was evaluated on).",
        "",
        markdown_table(["word", "read as"], other),
        "",
        *results_footer(argv),
    ])
    write_text_atomic(Path(args.results), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
