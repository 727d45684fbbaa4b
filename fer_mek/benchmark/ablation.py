"""The ablation of MEK's parts (``scripts/benchmark.py --only ablation``): what each part buys, over several seeds.

Every variant is a complete training run of :func:`fer_mek.train.main` with the same options (``--extra-train-args``:
a recipe, ``--source`` / ``--data-root``, epochs...; by default the default recipe on the embedded synthetic set)
plus its own switches, once per seed (``--seeds``: the seed of initialisation, sampling and augmentation; the
train/validation split keeps its own ``--split-seed``, so every run sees the same data). Each run selects its
checkpoint on validation mean-class accuracy and evaluates the test split once, as every fer-mek run does.

Variants (MEK = re-balanced smooth labels, RSL, + the attention consistency of the flipped pair, RAC):

- ``ce``: plain cross-entropy (``--method baseline``);
- ``ce+sampler``: cross-entropy with classes drawn equally often (``--balanced-sampler``);
- ``rsl``: MEK's label smoothing alone (``--attention-weight 0``);
- ``rac+ce``: the attention term with one-hot targets (``--smoothing 0``: RSL with epsilon 0 is cross-entropy);
- ``mek``: both, the recipe's epsilon and lambda;
- ``mek+sampler``: both, with the balanced sampler.

Reported per variant: mean and sample standard deviation over the seeds of test accuracy, test mean-class
accuracy, the test recall of the two rarest training classes and the attention maps' flip gap
(:func:`attention_flip_gap`: how far the chosen model is from what RAC asks for, on the test images; it tells whether
the attention term changed anything a plain classifier does not already do), and the mean training time. Run
folders stay in ``--work-dir``/ablation/ (replaced on every run of the benchmark).
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
from pathlib import Path
from typing import Any

from fer_mek_cli.benchmark import ABLATION_VARIANTS, parse_seeds  # their one place: the light command line

__all__ = ["ABLATION_VARIANTS", "attention_flip_gap", "format_ablation", "measure_ablation", "parse_seeds", "summarize_ablation"]

#: How many of the rarest training classes get their recall reported.
RARE_CLASSES = 2


def _run_options(common: list[str], variant: str, seed: int, output_dir: Path) -> list[str]:
    return [*common, *ABLATION_VARIANTS[variant], "--seed", str(seed), "--output-dir", str(output_dir), "--overwrite"]


def measure_ablation(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Train every variant of ``args.variants`` once per seed of ``args.seeds``; the runs' figures and their summary.

    ``args.extra_train_args`` holds the options common to every run (one string, split like a shell would).
    """
    from .. import train  # the training stack loads only when an ablation runs

    common = shlex.split(args.extra_train_args)
    taken = {"--seed", "--output-dir", "--method", "--balanced-sampler", "--no-balanced-sampler"} & set(common)
    if taken:
        raise ValueError(f"--extra-train-args {args.extra_train_args!r} sets {sorted(taken)}, which the ablation "
                         "chooses per run (--seeds, --variants); remove them")
    runs: list[dict[str, Any]] = []
    for variant in args.variants:
        for seed in args.seeds:
            output_dir = work_dir / "ablation" / f"{variant}-seed{seed}"
            options = _run_options(common, variant, seed, output_dir)
            results = _finished_run(output_dir, options) if getattr(args, "reuse_runs", False) else None
            if results is None:
                print(f"ablation: {variant}, seed {seed} -> {output_dir}", flush=True)
                results = train.main(options)
            else:
                print(f"ablation: {variant}, seed {seed}: reusing the finished run {output_dir} (same options)", flush=True)
            if "test" not in results:  # interrupted: nothing to report for this run
                raise ValueError(f"ablation run {variant} seed {seed} did not finish ({results}); run it again")
            runs.append({**_run_figures(variant, seed, results), "flip_gap": attention_flip_gap(output_dir / "best")})
    return {"common_options": common, "seeds": list(args.seeds), "runs": runs, "summary": summarize_ablation(runs)}


def _finished_run(output_dir: Path, options: list[str]) -> dict[str, Any] | None:
    """``--reuse-runs``: the results of ``output_dir`` when it holds a finished run (``results.json`` with test
    figures) trained with exactly the options ``options`` resolve to (its ``train_config.yaml``; an option that
    file does not name is newer than the run, which then behaved as its default); else ``None``. The code that
    trained it is not compared: reuse runs only within one version of fer-mek."""
    import json

    from ..runs import RESULTS, TRAIN_CONFIG, read_results, read_train_config
    from ..train import TrainConfig, parse_config
    from ..train.checkpoint import saved_options

    if not (output_dir / RESULTS).is_file() or not (output_dir / TRAIN_CONFIG).is_file():
        return None
    wanted = json.loads(json.dumps(saved_options(parse_config(options))))
    defaults = json.loads(json.dumps(saved_options(TrainConfig())))
    if {**defaults, **json.loads(json.dumps(read_train_config(output_dir)))} != wanted:
        return None
    results = read_results(output_dir)
    return results if "test" in results else None


def _run_figures(variant: str, seed: int, results: dict[str, Any]) -> dict[str, Any]:
    """What the ablation keeps of one run's ``results.json``."""
    counts = results["class_counts"]["train"]
    rarest = sorted(range(len(counts)), key=lambda index: (counts[index], index))[:RARE_CLASSES]
    test = results["test"]
    return {
        "variant": variant, "seed": seed, "run": results.get("run"),
        "accuracy": test["accuracy"], "mean_class_accuracy": test["mean_class_accuracy"],
        "rare_classes": [results["label_names"][index] for index in rarest],
        "rare_recall": [test["per_class_recall"][index] for index in rarest],
        "train_seconds": results.get("train_seconds"),
    }


def attention_flip_gap(model_dir: str | Path, split: str = "test", batch_size: int = 256) -> float:
    """The relative flip gap of a trained model's class attention maps on a split of its run's data.

    ``sum ||A(x) - flip(A(flip(x)))||^2 / sum (||A(x)||^2 + ||A(flip(x))||^2) / 2`` over the images ``x`` of the split
    (evaluation transform, no augmentation), with ``A`` the ``[K, h, w]`` class attention maps: 0 when the maps of
    every image and of its mirror image agree exactly (what MEK's attention term, RAC, asks for), larger the less
    they do. Scale-free, so models trained with different losses compare. Every class map counts equally (RAC weighs
    them by the balance weights).

    Args:
        model_dir: A run's ``best`` (or ``last``) folder: the split is rebuilt from the run's ``train_config.yaml``.
        split: ``"test"``, ``"validation"`` or ``"train"``.
        batch_size: Images per forward pass.
    """
    import torch
    from torch.utils.data import DataLoader

    from ..data import collate_fn, make_transform
    from ..inference import load_model
    from ..runs import DataOptions, RunError, run_config_of_model

    config = run_config_of_model(model_dir)
    if config is None:
        raise RunError(f"{model_dir} is not a model folder inside a training run (no train_config.yaml beside it)")
    model, processor = load_model(str(model_dir), "cpu")
    dataset = DataOptions.from_config(config).load()[split]
    transform = make_transform(processor, train=False, with_flip=False)
    loader = DataLoader(dataset.with_transform(transform), batch_size=batch_size, collate_fn=collate_fn)
    gap = size = 0.0
    with torch.inference_mode():
        for batch in loader:
            pixels = batch["pixel_values"]
            maps = model(pixel_values=pixels).attention_maps.double()
            mirrored = model(pixel_values=pixels.flip(-1)).attention_maps.double().flip(-1)
            gap += float((maps - mirrored).pow(2).sum())
            size += float((maps.pow(2).sum() + mirrored.pow(2).sum()) / 2)
    return gap / size if size else 0.0


def _mean_std(values: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def summarize_ablation(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant, in the order run: mean and sample standard deviation (``None`` for one seed) over its seeds."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(run["variant"] for run in runs):
        mine = [run for run in runs if run["variant"] == variant]
        summary[variant] = {
            "seeds": [run["seed"] for run in mine],
            "accuracy": _mean_std([run["accuracy"] for run in mine]),
            "mean_class_accuracy": _mean_std([run["mean_class_accuracy"] for run in mine]),
            "rare_classes": mine[0]["rare_classes"],
            "rare_recall": [_mean_std([run["rare_recall"][i] for run in mine]) for i in range(len(mine[0]["rare_recall"]))],
            "flip_gap": _mean_std([run["flip_gap"] for run in mine]),
            "train_seconds": statistics.fmean(run["train_seconds"] for run in mine)
            if all(run["train_seconds"] is not None for run in mine) else None,
        }
    return summary


def _cell(figure: dict[str, float | None], digits: int = 4) -> str:
    std = figure["std"]
    return f"{figure['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None and math.isfinite(std) else "")


def format_ablation(ablation: dict[str, Any]) -> list[str]:
    """The ablation as a Markdown table (BENCHMARKS.md-ready), with the common options and the seeds."""
    summary = ablation["summary"]
    if not summary:
        return []
    rare = next(iter(summary.values()))["rare_classes"]
    header = ["variant", "test accuracy", "test mean-class accuracy", *[f"recall {name}" for name in rare],
              "flip gap", "train min"]
    lines = [
        f"ablation: seeds {ablation['seeds']} (mean ± sample std); common options "
        f"{' '.join(ablation['common_options']) or '(the default recipe)'}",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for variant, figures in summary.items():
        minutes = "" if figures["train_seconds"] is None else f"{figures['train_seconds'] / 60:.1f}"
        lines.append("| " + " | ".join([variant, _cell(figures["accuracy"]), _cell(figures["mean_class_accuracy"]),
                                        *[_cell(r) for r in figures["rare_recall"]], _cell(figures["flip_gap"]),
                                        minutes]) + " |")
    return [*lines, ""]
