"""What an evaluation returns: named numbers (each naming the network that produced it), the
settings they were measured under, the prompt-accuracy table, and warnings; as text or JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ldmkit.eval.prompt_accuracy import ATTRIBUTES, GROUPS
from ldmkit.storage import atomic_path


@dataclass(frozen=True)
class Metric:
    """One reported number: ``label`` is e.g. "FID (shapes-cnn)" or "PSNR (dB)"."""

    name: str
    value: float
    std: float | None = None  # over images, splits or subsets (the metric's docstring says which)
    network: str | None = None  # the feature network; None for pixel metrics
    better: str = ""  # "lower" or "higher"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.network})" if self.network else self.name

    def formatted(self) -> str:
        value = _number(self.value)
        return f"{value} ± {_number(self.std)}" if self.std is not None else value


def _number(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "inf"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


@dataclass
class EvalReport:
    """An evaluation's results. ``prompt_accuracy`` is `PromptAccuracy.to_dict()` (or None)."""

    title: str
    metrics: list[Metric] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    prompt_accuracy: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, label: str) -> Metric:
        for m in self.metrics:
            if m.label == label:
                return m
        raise KeyError(f"no metric {label!r}; have: {', '.join(m.label for m in self.metrics)}")

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "settings": self.settings,
            "metrics": {m.label: {"value": m.value, "std": m.std, "network": m.network, "better": m.better or None}
                        for m in self.metrics},
            "prompt_accuracy": self.prompt_accuracy,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "EvalReport":
        """The report `to_dict` wrote."""
        metrics = [Metric(name=label[:-len(f" ({m['network']})")] if m["network"] else label, value=m["value"],
                          std=m["std"], network=m["network"], better=m["better"] or "")
                   for label, m in data["metrics"].items()]
        return cls(data["title"], metrics, data["settings"], data["prompt_accuracy"], data["warnings"])

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def format(self) -> str:
        """The table printed on screen."""
        lines = [self.title, ""]
        width = max((len(m.label) for m in self.metrics), default=10) + 2
        for m in self.metrics:
            arrow = {"lower": "↓", "higher": "↑"}.get(m.better, " ")
            lines.append(f"  {m.label:<{width}}{arrow} {m.formatted()}")
        if self.prompt_accuracy:
            lines += ["", "  prompt accuracy (shapes judge): share of stated attributes shown"]
            header = ["", "prompts", "all right"] + list(ATTRIBUTES) + ["malformed"]
            rows = [header]
            for g in GROUPS:
                d = self.prompt_accuracy[g]
                rows.append([g, str(d["prompts"]), percent(d["all"])] + [percent(d[a]) for a in ATTRIBUTES]
                            + [percent(d.get("malformed"))])
            widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
            for r in rows:
                lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
            if (why := failures_line(self.prompt_accuracy)):
                lines.append("  " + why)
        if self.settings:
            lines += ["", "  " + ", ".join(f"{k}={v}" for k, v in self.settings.items())]
        return "\n".join(lines)


def failures_line(accuracy: dict) -> str:
    """The line "two-object prompts not all right (N): number of objects a (x%), relation b (y%), …"
    of a `PromptAccuracy.to_dict()`, or "" when every two-object prompt is all right."""
    failures = accuracy.get("two-object failures", {})
    total = sum(failures.values())
    if not total:
        return ""
    return (f"two-object prompts not all right ({total}): "
            + ", ".join(f"{why} {n} ({100 * n / total:.0f}%)" for why, n in failures.items()))


def percent(x: float | None) -> str:
    """A share as "12.3%", or "–" for None (never stated)."""
    return "–" if x is None else f"{100 * x:.1f}%"
