"""Distillation (``scripts/benchmark.py --only distillation``): a small student trained on a fer-mek teacher's
distributions against the same student trained on hard labels, over several seeds.

Per seed (``--seeds``: initialisation, sampling and augmentation; the split keeps its own ``--split-seed``, so every
run sees the same data), two complete runs of :func:`fer_mek.train.main` with the options of ``--extra-train-args``
(default: the default recipe on the embedded synthetic set) and the student backbone (``--student``, default
``efficientface``):

- ``hard``: the hard labels, with the recipe's own method (the default recipe: MEK, i.e. re-balanced smooth labels
  and attention consistency);
- ``distilled``: ``--method ldt --teacher PATH`` (label-distribution training, EfficientFace's: the cross-entropy
  between the frozen teacher's softmax and the student's), plus ``--distill-train-args`` (e.g.
  ``"--distill-weight 0.9 --distill-temperature 2"``); everything else the same.

Each run selects its checkpoint as every fer-mek run does (validation mean-class accuracy, or the final epoch without
a validation split) and evaluates the test split once. Reported per variant: mean and sample standard deviation over
the seeds of test accuracy, test mean-class accuracy and the test recall of the two rarest training classes; the
student's parameters; its CPU latency per face (one image of the run's size, batch 1, ``torch.inference_mode``, after
``--warmup`` untimed calls, the median of ``--latency-runs`` timed calls, on the threads of ``--threads``); and the
mean training time. The teacher's parameters and latency, measured the same way, are reported beside them. Run folders
stay in ``--work-dir``/distillation/ (replaced on every run of the benchmark unless ``--reuse-runs``).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from pathlib import Path
from typing import Any

from .ablation import _cell, _finished_run, _mean_std
from .ablation import _run_figures as ablation_run_figures
from .timing import measure

__all__ = ["DISTILLATION_VARIANTS", "cpu_latency", "format_distillation", "measure_distillation",
           "summarize_distillation"]

#: The two runs of each seed, in the order they train and are reported.
DISTILLATION_VARIANTS = ("hard", "distilled")
#: Options the benchmark chooses per run: --extra-train-args must not set them.
CHOSEN_PER_RUN = ("--seed", "--output-dir", "--method", "--teacher", "--backbone", "--overwrite")


def _run_options(args: argparse.Namespace, common: list[str], distill: list[str], variant: str, seed: int,
                 output_dir: Path) -> list[str]:
    options = [*common, "--backbone", args.student]
    if variant == "distilled":
        options += ["--method", "ldt", "--teacher", str(args.teacher), *distill]
    return [*options, "--seed", str(seed), "--output-dir", str(output_dir), "--overwrite"]


def _check_options(args: argparse.Namespace, common: list[str], distill: list[str]) -> None:
    taken = sorted(option for option in CHOSEN_PER_RUN
                   if any(item == option or item.startswith(option + "=") for item in common))
    if taken:
        raise ValueError(f"--extra-train-args {args.extra_train_args!r} sets {taken}, which the distillation "
                         "benchmark chooses per run (--seeds, --student, --teacher); remove them")
    taken = sorted(option for option in CHOSEN_PER_RUN
                   if any(item == option or item.startswith(option + "=") for item in distill))
    if taken:
        raise ValueError(f"--distill-train-args {args.distill_train_args!r} sets {taken}, which the distillation "
                         "benchmark chooses per run; remove them")


def cpu_latency(model_dir: str | Path, warmup: int = 3, runs: int = 25) -> dict[str, Any]:
    """CPU latency of one face: the model of ``model_dir`` on one preprocessed image of its input size (batch 1, eval
    mode, ``torch.inference_mode``), ``warmup`` untimed calls, then ``runs`` timed calls; ``ms`` is the median.

    Also the model's parameter count (every parameter of the saved model: backbone and head)."""
    import torch

    from ..data.transforms import processor_settings
    from ..inference import load_model

    model, processor = load_model(str(model_dir), "cpu")
    settings = processor_settings(processor)
    image = torch.randn(1, 3, settings["height"], settings["width"], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        timed = measure(lambda: model(pixel_values=image), 1, label="one face, batch 1, CPU", calls=1,
                        warmup=max(1, warmup), repeats=max(1, runs))
    return {"ms": timed["ms_per_image"], "runs_ms": [1000.0 / rate for rate in timed["runs_images_per_s"]],
            "threads": torch.get_num_threads(), "image_size": [settings["height"], settings["width"]],
            "parameters": sum(p.numel() for p in model.parameters())}


def measure_distillation(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Train the hard-label and the distilled student once per seed of ``args.seeds``; the runs' figures, the
    teacher's size and latency, and their summary.

    ``args``: ``teacher``, ``student``, ``seeds``, ``extra_train_args`` (options common to every run, one string split
    like a shell would), ``distill_train_args`` (options of the distilled runs only), ``warmup``,
    ``latency_runs``, ``reuse_runs``.
    """
    from .. import train  # the training stack loads only when the benchmark runs

    if not args.teacher:
        raise ValueError("--only distillation needs --teacher: a trained fer-mek model folder (e.g. runs/NAME/best), "
                         "a transformers image-classification folder or a Hub id")
    common, distill = shlex.split(args.extra_train_args), shlex.split(args.distill_train_args)
    _check_options(args, common, distill)
    warmup, latency_runs = args.warmup, args.latency_runs
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for variant in DISTILLATION_VARIANTS:
            output_dir = work_dir / "distillation" / f"{variant}-seed{seed}"
            options = _run_options(args, common, distill, variant, seed, output_dir)
            results = _finished_run(output_dir, options) if getattr(args, "reuse_runs", False) else None
            if results is None:
                print(f"distillation: {variant}, seed {seed} -> {output_dir}", flush=True)
                results = train.main(options)
            else:
                print(f"distillation: {variant}, seed {seed}: reusing the finished run {output_dir} (same options)",
                      flush=True)
            if "test" not in results:  # interrupted: nothing to report for this run
                raise ValueError(f"distillation run {variant} seed {seed} did not finish ({results}); run it again")
            if variant == "hard" and results.get("method") == "ldt":
                raise ValueError("the hard-label run trained with --method ldt: --extra-train-args names a recipe "
                                 "whose method is ldt; give the hard-label method explicitly (e.g. a recipe of "
                                 "method mek or baseline)")
            latency = cpu_latency(output_dir / "best", warmup, latency_runs)
            runs.append({**_run_figures(variant, seed, results), "parameters": latency.pop("parameters"),
                         "latency": latency})
    teacher = _teacher_figures(runs, work_dir, warmup, latency_runs, args.teacher)
    return {"common_options": common, "distill_options": distill, "student": args.student,
            "teacher": teacher, "seeds": list(args.seeds), "runs": runs, "summary": summarize_distillation(runs)}


def _teacher_figures(runs: list[dict[str, Any]], work_dir: Path, warmup: int, latency_runs: int,
                     teacher: str) -> dict[str, Any]:
    """The teacher as the distilled runs recorded it (model, digest), with its parameters and CPU latency."""
    from ..runs import read_results

    record: dict[str, Any] = {"model": teacher}
    distilled = [run for run in runs if run["variant"] == "distilled"]
    if distilled:
        saved = read_results(work_dir / "distillation" / f"distilled-seed{distilled[0]['seed']}").get("teacher") or {}
        record.update({key: saved.get(key) for key in ("revision", "commit", "digest", "label_map", "temperature",
                                                         "weight", "reduction", "attention") if key in saved})
    if Path(teacher).is_dir():  # a local folder: timed like the students (a Hub id is named, not downloaded again)
        latency = cpu_latency(teacher, warmup, latency_runs)
        record.update(parameters=latency.pop("parameters"), latency=latency)
    return record


def _run_figures(variant: str, seed: int, results: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark keeps of one run's ``results.json``: the ablation's figures and the run's method."""
    return {**ablation_run_figures(variant, seed, results), "method": results.get("method")}


def summarize_distillation(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant (``hard``, then ``distilled``): mean and sample standard deviation (``None`` for one seed) over its
    seeds, and the student's parameter count."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in DISTILLATION_VARIANTS:
        mine = [run for run in runs if run["variant"] == variant]
        if not mine:
            continue
        summary[variant] = {
            "seeds": [run["seed"] for run in mine],
            "method": mine[0]["method"],
            "accuracy": _mean_std([run["accuracy"] for run in mine]),
            "mean_class_accuracy": _mean_std([run["mean_class_accuracy"] for run in mine]),
            "rare_classes": mine[0]["rare_classes"],
            "rare_recall": [_mean_std([run["rare_recall"][i] for run in mine]) for i in range(len(mine[0]["rare_recall"]))],
            "parameters": mine[0]["parameters"],
            "latency_ms": _mean_std([run["latency"]["ms"] for run in mine]),
            "train_seconds": statistics.fmean(run["train_seconds"] for run in mine)
            if all(run["train_seconds"] is not None for run in mine) else None,
        }
    return summary


def format_distillation(distillation: dict[str, Any]) -> list[str]:
    """The comparison as a Markdown table (BENCHMARKS.md-ready), with the teacher, the options and the seeds."""
    summary = distillation["summary"]
    if not summary:
        return []
    rare = next(iter(summary.values()))["rare_classes"]
    header = ["student", "test accuracy", "test mean-class accuracy", *[f"recall {name}" for name in rare],
              "parameters", "CPU ms / face", "train min"]
    teacher = distillation["teacher"]
    size = ""
    if teacher.get("parameters") is not None:
        size = f" ({teacher['parameters'] / 1e6:.2f} M parameters, {teacher['latency']['ms']:.1f} ms / face on the CPU)"
    lines = [
        f"distillation: student {distillation['student']}, teacher {teacher['model']}{size}; seeds "
        f"{distillation['seeds']} (mean ± sample std); common options "
        f"{' '.join(distillation['common_options']) or '(the default recipe)'}; distilled with --method ldt "
        f"{' '.join(distillation['distill_options'])}".rstrip(),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for variant, figures in summary.items():
        name = f"{variant} ({figures['method']})"
        minutes = "" if figures["train_seconds"] is None else f"{figures['train_seconds'] / 60:.1f}"
        lines.append("| " + " | ".join([name, _cell(figures["accuracy"]), _cell(figures["mean_class_accuracy"]),
                                        *[_cell(r) for r in figures["rare_recall"]],
                                        f"{figures['parameters'] / 1e6:.3f} M", _cell(figures["latency_ms"], 2),
                                        minutes]) + " |")
    return [*lines, ""]
