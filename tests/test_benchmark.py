"""scripts/benchmark.py end to end on a tiny setting: every figure is measured, positive, and written to JSON."""

from __future__ import annotations

import json
import math

import pytest

from .conftest import TINY_BACKBONE, TINY_IMAGE_SIZE, load_script

benchmark = load_script("benchmark")

# 120 JPEGs (96 train / 24 test), resnet18 at 32 px, batch 8, one timed window of 2 steps: a few seconds on one core.
TINY = ["--backbone", TINY_BACKBONE, "--image-size", str(TINY_IMAGE_SIZE), "--batch-size", "8", "--steps", "2",
        "--warmup", "1", "--repeats", "1", "--num-images", "120", "--workers", "0", "--reference-workers", "0",
        "--inference-images", "16"]
FIGURES = {"limit", "loop", "reference", "predictor", "pipeline", "model_alone"}


def test_every_figure_is_a_positive_rate_and_lands_in_the_json(tmp_path, capsys):
    results = benchmark.main([*TINY, "--work-dir", str(tmp_path)])
    assert set(results["figures"]) == FIGURES
    for name, figure in results["figures"].items():
        assert figure["images_per_s"] > 0 and math.isfinite(figure["images_per_s"]), name
        assert figure["ms_per_image"] == pytest.approx(1000 / figure["images_per_s"]), name
    assert set(results["ratios"]) >= {"loop/limit", "loop/reference", "predictor/pipeline"}
    assert all(value > 0 for value in results["ratios"].values())
    loop = results["figures"]["loop"]
    assert loop["setup_s"] > 0 and loop["steps"] == 3  # warm-up 1 + 1 x 2 timed steps
    assert results["figures"]["limit"]["inputs_via_model_inputs"]
    assert results["figures"]["reference"]["forward_passes_per_step"] == 2
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["figures"]["loop"]["images_per_s"] == loop["images_per_s"]
    assert {"torch", "timm", "transformers"} <= set(saved["versions"])
    table = capsys.readouterr().out
    assert "images/s" in table and "loop/limit" in table and "predictor/pipeline" in table


def test_only_runs_a_subset_and_reuses_the_data(tmp_path):
    first = benchmark.main([*TINY, "--work-dir", str(tmp_path), "--only", "limit", "--method", "baseline",
                            "--json", str(tmp_path / "limit.json")])
    assert set(first["figures"]) == {"limit"} and first["ratios"] == {}
    assert first["data"]["write_s"] > 0 and not first["data"]["reused"]
    assert first["figures"]["limit"]["single_pass_input"] is None  # baseline: no flip pair
    assert (tmp_path / "limit.json").is_file()
    again = benchmark.main([*TINY, "--work-dir", str(tmp_path), "--only", "limit", "--steps", "1"])
    assert again["data"]["reused"] and again["data"]["write_s"] == 0.0


def test_extra_train_args_may_be_a_single_flag():
    args = benchmark.parse_args(["--extra-train-args", "--no-single-pass", "--steps", "4"])
    assert args.extra_train_args == "--no-single-pass" and args.steps == 4


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        benchmark.main([*TINY, "--work-dir", str(tmp_path), "--only", "limit,nonsense"])
    with pytest.raises(ValueError, match="raise --num-images"):
        benchmark.main([*TINY, "--work-dir", str(tmp_path), "--only", "loop", "--steps", "50"])


def test_counts_follow_rafdb_proportions():
    train, test = benchmark.fixture_counts(15339)
    assert (sum(train), sum(test)) == (12271, 3068)
    assert train == [1290, 281, 717, 4772, 1982, 705, 2524]
    assert test == list(benchmark.RAFDB_TEST_COUNTS)
    small_train, small_test = benchmark.fixture_counts(120)
    assert sum(small_train) + sum(small_test) == 120 and min(small_train + small_test) >= 3
