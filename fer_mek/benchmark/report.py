"""The benchmark's one output: a header and a table of every figure on stdout, and the same results as JSON.

Moved from ``scripts/benchmark.py`` (``ratios_of``, ``format_report``); the data and predict figures, which had
tables of their own, are rows of the same table now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .ablation import format_ablation

__all__ = ["RATIOS", "format_report", "ratios_of", "write_json"]

#: Ratios of figures reported when both were measured, as ``(numerator, denominator)``.
RATIOS = (("loop", "limit"), ("loop", "reference"), ("predictor", "pipeline"), ("predictor", "model_alone"))
TRAINING = ("limit", "loop", "reference", "inference")


def ratios_of(figures: dict[str, dict[str, Any]]) -> dict[str, float]:
    """loop/limit, loop/reference, predictor/pipeline and predictor/model_alone, for the figures measured."""
    return {f"{top}/{bottom}": figures[top]["images_per_s"] / figures[bottom]["images_per_s"]
            for top, bottom in RATIOS if top in figures and bottom in figures}


def _header(results: dict[str, Any]) -> list[str]:
    """Machine, versions, date, commit and the settings of the figure kinds that ran."""
    machine, versions, settings, git = results["machine"], results["versions"], results["settings"], results["git"]
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    lines = [
        "fer-mek benchmark",
        f"machine: {machine['platform']} ({machine['processor']}), {machine['cpu_count']} CPUs "
        f"({machine['usable_cores']} usable), {machine['torch_threads']} torch threads{gpu}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"date: {results['date']}   git: {git.get('commit') or 'unknown'}"
        + (" (+ uncommitted changes)" if git.get("dirty") else ""),
        f"timing: median of {settings['repeats']} repetitions after {settings['warmup']} untimed warm-up call(s)",
    ]
    only = settings["only"]
    if set(TRAINING) & set(only):
        lines.append(
            f"training: {settings['backbone']} {settings['image_size']}px, batch {settings['batch_size']}, "
            f"{settings['method']}, mixed precision {settings['mixed_precision']}, auto-augment "
            f"{settings['auto_augment']!r}, re-prob {settings['re_prob']}, {settings['steps']} steps per repetition, "
            f"data {settings['num_images']} JPEGs "
            f"({settings['train_images']} train / {settings['test_images']} test)"
            + (f", extra train args {settings['extra_train_args']!r}" if settings["extra_train_args"] else ""))
    if "data" in only:
        lines.append(f"data: {', '.join(settings['data_sources'])}; {settings['data_images']} images per fixture, "
                     f"{settings['data_limit']} timed per pass, {settings['image_size']}px, batch "
                     f"{settings['batch_size']}, {settings['data_workers']} DataLoader workers")
    if "predict" in only:
        model = settings["predict_model"] or f"random MEK {settings['backbone']} @ {settings['image_size']}px"
        lines.append(f"predict: {model}, device {settings['predict_device'] or 'default'}, MTCNN detector, "
                     f"scikit-image's astronaut photograph, {settings['steps']} calls per repetition")
    return [*lines, ""]


def _table(figures: dict[str, dict[str, Any]], ratios: dict[str, float]) -> list[str]:
    """One row per figure: label, median images/s, ms/image, best ms/image and its ratios."""
    ratio_text = {top: "; ".join(f"{k} {v:.2f}" for k, v in ratios.items() if k.startswith(f"{top}/"))
                  for top in {top for top, _ in RATIOS}}
    header = ("figure", "images/s", "ms/image", "best ms/image", "ratio")
    rows = [(figure["label"], f"{figure['images_per_s']:,.1f}", f"{figure['ms_per_image']:.2f}",
             f"{1000.0 / figure['best_images_per_s']:.2f}", ratio_text.get(key, "")) for key, figure in figures.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "-|-".join("-" * w for w in widths)]
    for row in rows:
        lines.append(" | ".join(cell.rjust(w) if 0 < i < 4 else cell.ljust(w)
                                for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    return [*lines, ""]


def _notes(results: dict[str, Any]) -> list[str]:
    """Setup times, the data tree, the faces found in the stream and where the JSON went."""
    figures, lines = results["figures"], []
    if "loop" in figures:
        loop = figures["loop"]
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in loop["setup_phases_s"].items())
        cold = "cold, pixel cache built" if loop["data_pipeline"] == "cached" else "cold"
        lines.append(f"loop setup ({cold}): {loop['setup_s']:.1f} s ({phases}); data pipeline "
                     f"{loop['data_pipeline']}, {loop['num_workers']} workers, single pass {loop['single_pass']}")
    if "model_trainer_setup" in results:
        lines.append(f"setup of the limit's trainer (warm when the loop ran first): "
                     f"{results['model_trainer_setup']['setup_s']:.1f} s")
    if results.get("data", {}).get("write_s"):
        lines.append(f"writing the JPEG tree: {results['data']['write_s']:.1f} s (once; reused by later runs)")
    if "predict/stream" in figures:
        stream = figures["predict/stream"]
        lines.append(f"predict stream: {stream['faces_found']} faces in {stream['frames']} frames")
    lines.append(f"results: {results['json']}")
    return lines


def format_report(results: dict[str, Any]) -> str:
    """The header, the table and the notes printed at the end of a run."""
    table = _table(results["figures"], results["ratios"]) if results["figures"] else []
    ablation = format_ablation(results["ablation"]) if "ablation" in results else []
    return "\n".join([*_header(results), *table, *ablation, *_notes(results)])


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results (environment, settings, figures, ratios) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
