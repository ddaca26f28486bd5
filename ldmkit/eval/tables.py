"""Results files in markdown: tables of evaluation reports, and a run's training time read off its logs.

The maintained benchmarks (``benchmarks/``) write their results files with these. Each function takes
plain data and returns text; nothing here runs a model or writes a file:

- `markdown_table`: a header and rows of cells (already strings) → a GitHub markdown table;
- `prompt_accuracy_table`: a `PromptAccuracy.to_dict()` → one row per prompt group (one object, two
  objects, all): count, the share all right (bold) and the share of each attribute in `ATTRIBUTES`;
- `quality_per_step`: generation rows (sampler, steps, guidance and an `EvalReport.to_dict()`) → the line
  comparing a few-step sampler's FID and KID with a many-step one's at the first row's guidance;
- `training_stretches`, `describe_training`, `training_lines`: a run's ``log.csv`` → its stretches (a
  resumed run restarts the clock) → one bullet per stage (autoencoder, each UNet stage) on its steps and wall time.
"""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

from ldmkit.eval.prompt_accuracy import ATTRIBUTES, GROUPS
from ldmkit.eval.report import percent


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the header row, the ``|---|`` rule, then one line per row (no trailing newline)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def prompt_accuracy_table(accuracy: dict) -> str:
    """| prompts | count | all right | objects | shape | … | of a `PromptAccuracy.to_dict()`, one row per group
    in `GROUPS`; shares as `percent` writes them ("–" for an attribute never stated), all right in bold."""
    lines = ["| prompts | count | all right | " + " | ".join(ATTRIBUTES) + " |",
             "|---|---:|---:|" + "---:|" * len(ATTRIBUTES)]
    for group in GROUPS:
        d = accuracy[group]
        lines.append(f"| {group} | {d['prompts']} | **{percent(d['all'])}** | "
                     + " | ".join(percent(d[a]) for a in ATTRIBUTES) + " |")
    return "\n".join(lines)


def quality_per_step(rows: list[dict], fast=("dpmpp-2m", 20), slow=("ddim", 250)) -> list[str]:
    """["", line] comparing the ``fast`` (sampler, steps) row with the ``slow`` one, or [] unless both are
    among the rows at the first row's guidance. A row is {"sampler", "steps", "guidance", **an
    `EvalReport.to_dict()` whose metrics hold "FID (shapes-cnn)", "KID (shapes-cnn)" and "FID floor, real vs
    real (shapes-cnn)" and whose settings hold "images"}. The line gives fast's FID relative to slow's,
    both KIDs, the ratio of UNet calls (slow steps / fast steps) and slow's FID floor."""
    found = {(r["sampler"], r["steps"]): r for r in rows if r["guidance"] == rows[0]["guidance"]}
    if fast not in found or slow not in found:
        return []
    f, s = (found[k]["metrics"] for k in (fast, slow))
    fid_f, fid_s = f["FID (shapes-cnn)"]["value"], s["FID (shapes-cnn)"]["value"]
    return ["", f"Quality per step: {fast[0]} at {fast[1]} steps has FID {fid_f:.1f} against {slow[0]} at {slow[1]} "
            f"steps' {fid_s:.1f} ({100 * (fid_f - fid_s) / fid_s:+.1f}%), KID {f['KID (shapes-cnn)']['value']:.2f} "
            f"against {s['KID (shapes-cnn)']['value']:.2f}, at {slow[1] / fast[1]:.1f}× fewer UNet calls. At "
            f"{found[slow]['settings']['images']} images FID's bias is large (real-vs-real floor "
            f"{s['FID floor, real vs real (shapes-cnn)']['value']:.1f}); KID is unbiased, so it is the finer comparison."]


def training_stretches(log: str | Path) -> list[dict]:
    """The stretches of a run from its ``log.csv`` (columns step and time, seconds since the stretch
    started; a resumed run restarts the clock), each as {"from": first step, "to": last step, "wall":
    seconds, "rate": median seconds per step}.

    The rates say how fast each stretch ran; a stretch that shared the CPU with other work shows as
    slower, so the fastest one is the machine's speed with the CPU to itself.
    """
    stretches, last_time, last_step, rates, start = [], 0.0, 0, [], 0
    with open(log) as f:
        for row in csv.DictReader(f):
            t, step = float(row["time"]), int(row["step"])
            if t < last_time:  # a resumed stretch starts
                stretches.append({"from": start, "to": last_step, "wall": last_time, "rate": statistics.median(rates)})
                start, last_time, rates = last_step, 0.0, []
            rates.append((t - last_time) / (step - last_step))
            last_time, last_step = t, step
    if rates:
        stretches.append({"from": start, "to": last_step, "wall": last_time, "rate": statistics.median(rates)})
    return stretches


def describe_training(name: str, stretches: list[dict]) -> str:
    """One markdown bullet: the run's steps, wall time per stretch and its time at the fastest rate."""
    wall = sum(s["wall"] for s in stretches)
    parts = "; ".join(f"steps {s['from']}–{s['to']} at {s['rate']:.2f} s/step" for s in stretches)
    fastest = min(s["rate"] for s in stretches)
    return (f"- training, {name}: {stretches[-1]['to']} steps in {wall / 60:.0f} min of wall time ({parts}); "
            f"{stretches[-1]['to'] * fastest / 60:.0f} min at the fastest stretch's rate")


KEPT = " (measured from a log that is no longer in --runs; kept from the file this one replaced)"


STAGES = (("autoencoder", "autoencoder"), ("LDM", "model"))  # (name, sub-folder) of a two-stage run


def training_lines(runs: str | Path, earlier: str | Path, stages: tuple[tuple[str, str], ...] = STAGES) -> list[str]:
    """A bullet per stage of the training folder ``runs`` on its training time: ``stages`` lists each stage as
    (name, its sub-folder), by default ``autoencoder/`` and ``model/``. Each bullet is `describe_training` of
    the stage's ``log.csv``; without the log, the stage's bullet in the ``earlier`` results file (marked with
    `KEPT`, once); else "not timed here"."""
    runs, earlier = Path(runs), Path(earlier)
    names = "|".join(re.escape(name) for name, _ in stages)
    kept = {}
    if earlier.is_file():
        for line in earlier.read_text().splitlines():
            stage = re.match(rf"- training, ({names}): (?!not timed)", line)
            if stage:
                kept[stage[1]] = line if line.endswith(KEPT) else line + KEPT
    logs = [(name, runs / folder / "log.csv") for name, folder in stages]
    return [describe_training(name, training_stretches(log)) if log.is_file()
            else kept.get(name, f"- training, {name}: not timed here (no {log})") for name, log in logs]
