"""fer_mek.benchmark (scripts/benchmark.py) end to end on tiny settings: every figure is measured, positive, and
written to JSON; ``--only data`` and ``--only predict`` land in the same table and JSON."""

from __future__ import annotations

import json
import math

import pytest

from fer_mek import benchmark
from fer_mek.benchmark.fixtures import RAFDB_TEST_COUNTS, fixture_counts

from .conftest import TINY_BACKBONE, TINY_IMAGE_SIZE

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
    with pytest.raises(SystemExit):
        benchmark.main(["--only", "data", "--data-sources", "rafdb,nonsense"])
    assert benchmark.cli_main([*TINY, "--work-dir", str(tmp_path), "--only", "loop", "--steps", "50"]) == 1


def test_counts_follow_rafdb_proportions():
    train, test = fixture_counts(15339)
    assert (sum(train), sum(test)) == (12271, 3068)
    assert train == [1290, 281, 717, 4772, 1982, 705, 2524]
    assert test == list(RAFDB_TEST_COUNTS)
    small_train, small_test = fixture_counts(120)
    assert sum(small_train) + sum(small_test) == 120 and min(small_train + small_test) >= 3


def test_only_data_times_every_source_in_the_same_table_and_json(tmp_path, capsys):
    # Was scripts/benchmark_data.py's smoke test (tests/test_data_scripts.py).
    out = tmp_path / "bench.json"
    results = benchmark.main(["--only", "data", "--data-sources", "rafdb,fer2013-csv", "--data-images", "100",
                              "--data-limit", "8", "--image-size", "32", "--warmup", "1", "--repeats", "1",
                              "--work-dir", str(tmp_path), "--json", str(out)])
    assert "data" not in results  # no RAF-DB tree for the training figures was written
    saved = json.loads(out.read_text())
    train = {name: figure for name, figure in saved["figures"].items() if figure["pipeline"] == "train"}
    assert [figure["source"] for figure in train.values()] == ["rafdb", "fer2013-csv"]
    assert all(figure["images_per_s"] > 0 for figure in train.values())
    assert {"data/rafdb/load", "data/rafdb/decode", "data/rafdb/eval"} <= set(saved["figures"])
    assert saved["git"] == {"commit": None, "dirty": None, "error": "no source folder given"}
    assert "data rafdb: decode + train augmentation + flip pair" in capsys.readouterr().out


def test_only_predict_times_the_predictor_in_detail(tmp_path, capsys):
    # Was scripts/benchmark_predict.py (no test): detection, one crop, end to end, batched crops, a stream.
    results = benchmark.main(["--only", "predict", "--backbone", TINY_BACKBONE, "--image-size", str(TINY_IMAGE_SIZE),
                              "--steps", "1", "--warmup", "1", "--repeats", "1", "--predict-device", "cpu",
                              "--work-dir", str(tmp_path)])
    names = ["predict/detect", "predict/classify", "predict/end_to_end", "predict/batch", "predict/stream"]
    assert list(results["figures"]) == names and results["ratios"] == {}
    for name, figure in results["figures"].items():
        assert figure["images_per_s"] > 0 and math.isfinite(figure["images_per_s"]), name
        assert figure["device"] == "cpu", name
    stream = results["figures"]["predict/stream"]
    assert stream["frames"] == 2 and stream["faces_found"] == 2  # warm-up 1 + 1 x 1 frames, one face each
    assert results["figures"]["predict/batch"]["batch_size"] == 16
    assert json.loads((tmp_path / "benchmark.json").read_text())["figures"].keys() == results["figures"].keys()
    table = capsys.readouterr().out
    assert "predict: face detection, 512x512 photo" in table and "2 faces in 2 frames" in table


# ------------------------------------------------------------------------------------------------------- ablation
ABLATION_TRAIN = ("--synthetic-images 150 --synthetic-image-size 32 --image-size 32 --batch-size 16 --epochs 1 "
                  f"--backbone {TINY_BACKBONE} --num-workers 0 --log-with none --auto-augment ''")


def test_the_ablation_trains_each_variant_per_seed_and_reports_mean_and_std(tmp_path, capsys):
    results = benchmark.main(["--only", "ablation", "--variants", "ce,mek+sampler,rac+ce", "--seeds", "0,1",
                              "--extra-train-args", ABLATION_TRAIN, "--work-dir", str(tmp_path)])
    ablation = results["ablation"]
    assert [(run["variant"], run["seed"]) for run in ablation["runs"]] == [
        ("ce", 0), ("ce", 1), ("rac+ce", 0), ("rac+ce", 1), ("mek+sampler", 0), ("mek+sampler", 1)]
    # each run is a real run folder whose options are the variant's
    configs = {run["variant"]: (tmp_path / "ablation" / f"{run['variant']}-seed{run['seed']}" / "train_config.yaml")
               for run in ablation["runs"] if run["seed"] == 1}
    texts = {variant: path.read_text() for variant, path in configs.items()}
    assert "method: baseline" in texts["ce"] and "balanced_sampler: false" in texts["ce"]
    assert "method: mek" in texts["mek+sampler"] and "balanced_sampler: true" in texts["mek+sampler"]
    assert "smoothing: 0.0" in texts["rac+ce"] and "seed: 1" in texts["rac+ce"]
    # the two rarest classes of the runs' training split, with their test recall
    summary = ablation["summary"]["ce"]
    run = json.loads((tmp_path / "ablation" / "ce-seed0" / "results.json").read_text())
    counts = run["class_counts"]["train"]
    rarest = sorted(range(len(counts)), key=lambda i: (counts[i], i))[:2]
    assert summary["rare_classes"] == [run["label_names"][i] for i in rarest]
    assert ablation["runs"][0]["rare_recall"] == [run["test"]["per_class_recall"][i] for i in rarest]
    accuracies = [run["accuracy"] for run in ablation["runs"] if run["variant"] == "ce"]
    assert summary["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    assert summary["accuracy"]["std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / math.sqrt(2))
    out = capsys.readouterr().out
    rare = " | ".join(f"recall {name}" for name in summary["rare_classes"])
    assert f"| variant | test accuracy | test mean-class accuracy | {rare} | flip gap | train min |" in out
    saved = json.loads((tmp_path / "benchmark.json").read_text())["ablation"]["summary"]
    assert list(saved) == ["ce", "rac+ce", "mek+sampler"] and saved["ce"] == summary
    # The flip gap is RAC with every class weighted 1 (summed, times the map size), over the maps' squared size.
    import torch
    from torch.utils.data import DataLoader

    from fer_mek.data import collate_fn, load_source, make_transform
    from fer_mek.inference import load_model
    from fer_mek.losses import attention_consistency_loss

    model, processor = load_model(str(tmp_path / "ablation" / "ce-seed0" / "best"), "cpu")
    test = load_source("synthetic", num_images=150, image_size=32)["test"]
    (batch,) = DataLoader(test.with_transform(make_transform(processor, train=False, with_flip=False)),
                          batch_size=len(test), collate_fn=collate_fn)
    with torch.inference_mode():
        maps = model(pixel_values=batch["pixel_values"]).attention_maps.double()
        of_flipped = model(pixel_values=batch["pixel_values"].flip(-1)).attention_maps.double()
    rac = attention_consistency_loss(maps, of_flipped, torch.ones(maps.shape[1]), reduction="sum")
    size = (maps.pow(2).sum() + of_flipped.pow(2).sum()) / 2
    expected = float(rac) * maps.shape[2] * maps.shape[3] / float(size)
    assert ablation["runs"][0]["flip_gap"] == pytest.approx(expected, rel=1e-5)
    assert 0 < expected < 4


def test_the_ablation_refuses_options_it_chooses_per_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--only", "ablation", "--seeds", "1,1"])
    assert "each once" in capsys.readouterr().err
    with pytest.raises(ValueError, match="chooses per run"):
        benchmark.main(["--only", "ablation", "--extra-train-args", "--method baseline", "--work-dir", str(tmp_path)])


def test_the_ablation_reuses_finished_runs_with_the_same_options_only(tmp_path, capsys):
    argv = ["--only", "ablation", "--variants", "ce", "--seeds", "0", "--extra-train-args", ABLATION_TRAIN,
            "--work-dir", str(tmp_path)]
    first = benchmark.main(argv)["ablation"]
    capsys.readouterr()
    again = benchmark.main([*argv, "--reuse-runs"])["ablation"]
    assert "reusing the finished run" in capsys.readouterr().out
    assert again["summary"] == first["summary"]
    changed = [*argv[:-3], ABLATION_TRAIN + " --lr 0.001", "--work-dir", str(tmp_path), "--reuse-runs"]
    benchmark.main(changed)
    out = capsys.readouterr().out
    assert "reusing" not in out and "ablation: ce, seed 0 ->" in out


# ------------------------------------------------------------------------------------------------------- distillation
DISTILL_TRAIN = ("--synthetic-images 150 --synthetic-image-size 32 --image-size 32 --batch-size 16 --epochs 1 "
                 "--num-workers 0 --log-with none --auto-augment ''")


def tiny_teacher(folder):
    """A fer-mek model folder (resnet18 at 32 px, RAF-DB's classes): what a trained teacher's folder holds."""
    import torch

    from fer_mek import MEKConfig, MEKForImageClassification, MEKImageProcessor
    from fer_mek.labels import RAFDB_LABELS

    config = MEKConfig(backbone=TINY_BACKBONE, image_size=TINY_IMAGE_SIZE, id2label=dict(enumerate(RAFDB_LABELS)))
    torch.manual_seed(0)
    MEKForImageClassification(config).save_pretrained(folder)
    MEKImageProcessor.from_model_config(config).save_pretrained(folder)
    return folder


def test_the_distillation_trains_hard_and_distilled_students_per_seed(tmp_path, capsys):
    teacher = tiny_teacher(tmp_path / "teacher")
    results = benchmark.main(["--only", "distillation", "--teacher", str(teacher), "--seeds", "0,1",
                              "--extra-train-args", DISTILL_TRAIN, "--distill-train-args", "--distill-weight 0.5",
                              "--warmup", "1", "--latency-runs", "3", "--work-dir", str(tmp_path / "work")])
    distillation = results["distillation"]
    assert [(run["variant"], run["seed"]) for run in distillation["runs"]] == [
        ("hard", 0), ("distilled", 0), ("hard", 1), ("distilled", 1)]
    folder = tmp_path / "work" / "distillation"
    hard, distilled = ((folder / f"{v}-seed1" / "train_config.yaml").read_text() for v in ("hard", "distilled"))
    assert "backbone: efficientface" in hard and "method: mek" in hard and "seed: 1" in hard  # the recipe's method
    assert "backbone: efficientface" in distilled and "method: ldt" in distilled and "distill_weight: 0.5" in distilled
    assert f"teacher: {teacher}" in distilled
    # the same student either way; its parameters and a positive CPU latency per face
    summary = distillation["summary"]
    assert list(summary) == ["hard", "distilled"]
    assert summary["hard"]["parameters"] == summary["distilled"]["parameters"]
    assert 1.0e6 < summary["hard"]["parameters"] < 1.4e6  # EfficientFace with a 7-class head: ~1.28 M
    for run in distillation["runs"]:
        assert run["latency"]["ms"] > 0 and len(run["latency"]["runs_ms"]) == 3
        assert run["latency"]["image_size"] == [32, 32]
    accuracies = [run["accuracy"] for run in distillation["runs"] if run["variant"] == "distilled"]
    assert summary["distilled"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    assert summary["distilled"]["accuracy"]["std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / math.sqrt(2))
    run = json.loads((folder / "distilled-seed0" / "results.json").read_text())
    assert distillation["runs"][1]["mean_class_accuracy"] == run["test"]["mean_class_accuracy"]
    # the teacher: as the runs recorded it, with its own size and latency
    assert distillation["teacher"]["digest"] == run["teacher"]["digest"] and distillation["teacher"]["weight"] == 0.5
    assert distillation["teacher"]["parameters"] > 1e7 and distillation["teacher"]["latency"]["ms"] > 0
    out = capsys.readouterr().out
    rare = " | ".join(f"recall {name}" for name in summary["hard"]["rare_classes"])
    assert f"| student | test accuracy | test mean-class accuracy | {rare} | parameters | CPU ms / face | train min |" in out
    assert "| distilled (ldt) |" in out and "| hard (mek) |" in out
    assert json.loads((tmp_path / "work" / "benchmark.json").read_text())["distillation"]["summary"] == json.loads(
        json.dumps(summary))


def test_the_distillation_needs_a_teacher_and_refuses_options_it_chooses_per_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--only", "distillation"])
    assert "--only distillation needs --teacher" in capsys.readouterr().err
    for option in ("--backbone resnet18", "--method baseline", "--teacher x"):
        with pytest.raises(ValueError, match="chooses per run"):
            benchmark.main(["--only", "distillation", "--teacher", str(tmp_path), "--extra-train-args", option,
                            "--work-dir", str(tmp_path)])
    assert not (tmp_path / "distillation").exists()
