"""Training (``fer_mek.train``) end to end on tiny synthetic runs: outputs, resume, interruption, bad input, two
processes, and the command line of ``scripts/train.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fer_mek import evaluation, train

from .conftest import REPO_ROOT

# 150 synthetic images at 32 px, batch 16: a couple of seconds per epoch on one core.
# fp32 whatever the CPU (the default recipe's `auto` picks bf16 where it is native): runs compare bit for bit.
TINY = ["--synthetic-images", "150", "--image-size", "32", "--batch-size", "16", "--num-workers", "0",
        "--log-with", "none", "--auto-augment", "", "--lr", "0.003", "--mixed-precision", "no"]


def run_dir_files(run: Path) -> set[str]:
    return {p.name for p in run.iterdir()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    results = train.main([*TINY, "--epochs", "2", "--output-dir", str(run)])
    return run, results


def test_default_run_leaves_a_complete_evaluated_folder(tiny_run):
    run, results = tiny_run
    assert {"best", "last", "checkpoint", "results.json", "confusion_matrix.png", "training_curves.png",
            "train_config.yaml"} <= run_dir_files(run)
    saved = json.loads((run / "results.json").read_text())
    assert saved["test"]["accuracy"] == results["test"]["accuracy"]
    for split in ("validation", "test"):
        metrics = saved[split]
        assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["mean_class_accuracy"] <= 1.0
        assert len(metrics["per_class_recall"]) == 7 and len(metrics["confusion_matrix"]) == 7
    assert saved["label_names"][0] == "surprise"
    assert saved["dataset"]["val_fraction"] == 0.1 and saved["dataset"]["split_seed"] == 0
    assert saved["init"] == {"source": "random"}
    assert saved["selection"]["metric"] == "mean_class_accuracy"
    assert len(saved["history"]) == 2 and saved["selection"]["best_epoch"] in (1, 2)
    assert saved["validation"]["num_samples"] == sum(saved["class_counts"]["validation"])
    assert saved["test"]["num_samples"] == sum(saved["class_counts"]["test"])
    assert saved["balance_weights"][1] > saved["balance_weights"][3]  # fear rarer than happy
    assert {"torch", "timm", "transformers", "accelerate", "datasets"} <= set(saved["environment"])


def test_best_checkpoint_loads_with_auto_classes_and_keeps_class_names(tiny_run):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    run, results = tiny_run
    model = AutoModelForImageClassification.from_pretrained(run / "best")
    processor = AutoImageProcessor.from_pretrained(run / "best")
    assert [model.config.id2label[i] for i in range(7)] == results["label_names"]
    assert model.config.class_counts == results["class_counts"]["train"]
    assert processor.size == {"height": 32, "width": 32}


def test_test_metrics_are_those_of_the_chosen_checkpoint(tiny_run):
    """The reported test numbers come from best/, evaluated once, and equal a fresh evaluation of best/."""
    run, results = tiny_run
    # The dataset options come from the run's train_config.yaml.
    again = evaluation.main(["--model", str(run / "best"), "--split", "test", "--batch-size", "7",
                             "--num-workers", "0"])
    assert again["accuracy"] == results["test"]["accuracy"]
    assert again["confusion_matrix"] == results["test"]["confusion_matrix"]


def test_baseline_switch_trains_plain_cross_entropy(tmp_path):
    results = train.main([*TINY, "--epochs", "1", "--method", "baseline", "--output-dir", str(tmp_path / "b")])
    config = json.loads((tmp_path / "b" / "best" / "config.json").read_text())
    assert config["smoothing"] == 0.0 and config["attention_weight"] == 0.0
    assert results["method"] == "baseline"
    assert "train_attention_loss" not in results["history"][0]


def test_reference_path_per_sample_pipeline_and_two_passes_still_trains(tmp_path):
    """The per-sample pipeline (PIL + timm RandAugment in workers) with the reference's two forward passes."""
    results = train.main([*TINY, "--epochs", "1", "--data-pipeline", "per-sample", "--no-single-pass",
                          "--no-channels-last", "--auto-augment", "rand-m9-mstd0.5-inc1", "--re-prob", "0.25",
                          "--output-dir", str(tmp_path / "ref")])
    assert results["config"]["data_pipeline"] == "per-sample" and results["config"]["single_pass"] is False
    assert results["history"][0]["train_attention_loss"] > 0


def test_cached_pipeline_with_the_official_augmentation_trains(tmp_path):
    results = train.main([*TINY, "--epochs", "1", "--auto-augment", "rand-m9-mstd0.5-inc1", "--re-prob", "0.25",
                          "--output-dir", str(tmp_path / "fast")])
    assert results["config"]["data_pipeline"] == "cached" and results["config"]["single_pass"] is True
    assert results["history"][0]["train_attention_loss"] > 0


# The sources' settings that carry state across a stop: MEK-CV's weighted sampler and early stopping (patience 1 over
# 5 epochs: it fires after epoch 2), the official MEK protocol (long epochs, a run of N steps with the last epoch cut,
# timm's cosine, no validation split) with MEK-CV's per-sample augmentation chain.
RESUMED_SETTINGS = {
    "default": [],
    # Dropout, Dropout2d (the conv_bn head) and drop path draw from the global CPU generator in the forward pass: a
    # resume must leave that generator where the uninterrupted run has it.
    "dropout": ["--dropout", "0.3"],
    "dropout2d-drop-path-weighted-sampler": ["--head", "conv_bn", "--dropout", "0.4", "--drop-path", "0.1",
                                             "--balanced-sampler"],
    "weighted-sampler-early-stopping": ["--balanced-sampler", "--early-stopping-patience", "1", "--epochs", "5"],
    "official-schedule-per-sample": [
        "--val-split", "none", "--epoch-size", "200", "--train-steps", "18", "--scheduler", "timm-cosine",
        "--warmup-steps", "3", "--warmup-lr", "1e-4", "--min-lr", "1e-5", "--balanced-sampler",
        "--data-pipeline", "per-sample", "--crop", "padded", "--crop-padding", "4", "--rotation", "15",
        "--rotation-interpolation", "nearest", "--hflip", "0", "--color-jitter", "0.3", "0.3", "0", "0",
        "--re-prob", "0.5", "--re-mode", "torchvision", "--re-scale", "0.02", "0.2", "--no-single-pass"],
}


@pytest.mark.parametrize("settings", list(RESUMED_SETTINGS))
def test_resume_after_a_stop_mid_epoch_gives_the_same_weights(tmp_path, settings):
    """Stop after 5 optimizer steps (inside epoch 1 of 2), resume: final weights equal an uninterrupted run."""
    common = [*TINY, "--epochs", "2", "--checkpoint-every", "3", *RESUMED_SETTINGS[settings]]
    straight_results = train.main([*common, "--output-dir", str(tmp_path / "straight")])
    partial = train.main([*common, "--max-steps", "5", "--output-dir", str(tmp_path / "resumed")])
    assert partial == {"finished": False, "global_step": 5}
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 5, 5)
    resumed_results = train.main([*common, "--resume", "--output-dir", str(tmp_path / "resumed")])
    # The whole history: validation metrics, learning rates and the train losses of every epoch (the checkpoint
    # carries the running sums of the epoch it stopped in).
    assert resumed_results["history"] == straight_results["history"]
    if settings == "weighted-sampler-early-stopping":
        assert len(resumed_results["history"]) < 5  # stopped early, at the same epoch as the uninterrupted run
        # Resuming a run that early stopping ended trains no further epoch (its checkpoint says it stopped).
        again = train.main([*common, "--resume", "--output-dir", str(tmp_path / "straight")])
        assert again["history"] == straight_results["history"]
    if settings == "official-schedule-per-sample":
        assert resumed_results["selection"]["checkpoint"] == "last" and len(resumed_results["history"]) == 2
    straight = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_interrupt_saves_a_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    original = train.Trainer.train_epoch

    def interrupted_after_first_epoch(self, epoch):
        stats = original(self, epoch)
        self._on_interrupt(2, None)  # what Ctrl-C does
        return stats

    monkeypatch.setattr(train.Trainer, "train_epoch", interrupted_after_first_epoch)
    run = tmp_path / "run"
    assert train.main([*TINY, "--epochs", "2", "--output-dir", str(run)]) == {"interrupted": True, "signal": "SIGINT"}
    assert (run / "checkpoint" / "trainer_state.json").is_file()
    assert not (run / "results.json").exists()
    monkeypatch.setattr(train.Trainer, "train_epoch", original)
    results = train.main([*TINY, "--epochs", "2", "--resume", "--output-dir", str(run)])
    assert len(results["history"]) == 2


def test_a_crash_while_saving_leaves_complete_folders_and_the_run_resumable(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train.main([*TINY, "--epochs", "1", "--output-dir", str(run)])
    best_before = (run / "best" / "model.safetensors").read_bytes()

    from fer_mek import MEKPreTrainedModel

    def dies_midway(self, save_directory, *args, **kwargs):
        Path(save_directory, "model.safetensors").write_bytes(b"half written")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(MEKPreTrainedModel, "save_pretrained", dies_midway)
        with pytest.raises(OSError, match="disk full"):
            train.main([*TINY, "--epochs", "2", "--resume", "--output-dir", str(run)])
    # Whatever save was under way, the folders that existed are complete, and no temporary folder is left.
    assert (run / "best" / "model.safetensors").read_bytes() == best_before
    assert not [p.name for p in run.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    results = train.main([*TINY, "--epochs", "2", "--resume", "--output-dir", str(run)])
    assert len(results["history"]) == 2


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--recipe", "imagenet-from-dreams"], "unknown recipe 'imagenet-from-dreams'"),
        (["--source", "rafdb"], "--source rafdb needs --data-root"),
        (["--init", "no/such/file.pth"], "not random, timm, nor an existing state_dict file"),
        (["--resume", "--overwrite"], "exclude each other"),
        (["--val-fraction", "1.5"], "--val-fraction must be in"),
        (["--auto-augment", "augmix-m5"], "use --data-pipeline per-sample"),
        (["--num-workers", "-3"], "--num-workers must be -1"),
    ],
)
def test_bad_options_are_clear_errors_before_training(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        train.main([*argv, "--output-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_unknown_option_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        train.main(["--learning-rate", "0.1"])
    assert "unrecognized arguments: --learning-rate" in capsys.readouterr().err


def test_data_root_that_does_not_match_the_source(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="RAF-DB"):
        train.main([*TINY, "--source", "rafdb", "--data-root", str(tmp_path / "photos"),
                    "--output-dir", str(tmp_path / "run")])


def test_output_folder_of_another_run_is_refused(tiny_run, tmp_path):
    run, _ = tiny_run
    with pytest.raises(ValueError, match="already holds a run"):
        train.main([*TINY, "--epochs", "1", "--output-dir", str(run)])
    with pytest.raises(ValueError, match=r"different run \(backbone: 'resnet18' -> 'resnet34'\)"):
        train.main([*TINY, "--epochs", "1", "--backbone", "resnet34", "--resume", "--output-dir", str(run)])


def test_overwrite_deletes_only_a_run_folder(tmp_path):
    """--overwrite replaces a run; a folder that holds something else (a dataset, a home folder) is never deleted."""
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "photo.jpg").write_bytes(b"not a run")
    with pytest.raises(ValueError, match="holds no fer-mek run"):
        train.main([*TINY, "--epochs", "1", "--overwrite", "--output-dir", str(precious)])
    assert (precious / "photo.jpg").read_bytes() == b"not a run"


def test_a_backbone_file_that_does_not_fit_stops_before_training(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match="does not fit the model"):
        train.main([*TINY, "--init", str(tmp_path / "r34.pth"), "--output-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_recipes_parse_and_document_their_target():
    for name in train.list_recipes():
        values = train.load_recipe(name)
        text = (train.RECIPE_DIR / f"{name}.yaml").read_text()
        assert text.startswith("#"), f"{name}: a recipe starts with a comment saying its source"
        if name != "synthetic":
            assert "Target" in text, name
            assert values["source"] in ("rafdb", "fer2013")
    assert train.parse_config([]).source == "synthetic"
    # The official rule 5e-4 x total batch / 512 (batch 32), written out in the recipe since issue 12; the recipe
    # names the official start_0.pt as --init, which --print-config's parsing does not require to exist.
    swin, _ = train.parse_command_line(["--recipe", "rafdb-swin-t", "--data-root", "x", "--print-config"])
    assert swin.lr == 5e-4 * swin.batch_size / 512


def test_recipes_come_from_the_folder_passed_in(tmp_path):
    (tmp_path / "mine.yaml").write_text("# a recipe of my own\nepochs: 3\nbackbone: resnet34\n")
    assert train.list_recipes(tmp_path) == ["mine"]
    config = train.parse_config(["--recipe", "mine", "--epochs", "2"], recipe_dir=tmp_path)
    assert (config.backbone, config.epochs) == ("resnet34", 2)
    with pytest.raises(ValueError, match=r"unknown recipe 'synthetic'; choose one of \['mine'\]"):
        train.parse_config([], recipe_dir=tmp_path)


def test_resuming_a_run_on_another_source_ignores_the_synthetic_set_options(tmp_path):
    """A run on a real dataset saved the synthetic options of its time; their defaults may change since."""
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    argv = ["--source", "folder", "--data-root", str(tmp_path), "--output-dir", str(run)]
    saved = dataclasses.asdict(train.parse_config(argv))
    saved.update(synthetic_images=4000, synthetic_image_size=112)
    (run / "train_config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    train.check_run_folder(train.parse_config([*argv, "--resume"]))
    saved["source"] = "synthetic"
    (run / "train_config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    with pytest.raises(ValueError, match=r"different run \(source: 'synthetic' -> 'folder'\)"):
        train.check_run_folder(train.parse_config([*argv, "--resume"]))


def test_command_line_prints_errors_as_one_line(tmp_path, capsys):
    assert train.cli_main(["--source", "rafdb", "--output-dir", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.strip() == "error: --source rafdb needs --data-root (the dataset's file, folder or Hub id)"
    assert evaluation.cli_main(["--model", str(tmp_path / "nothing-here"), "--source", "rafdb"]) != 0
    assert capsys.readouterr().err.startswith("error: ")


def test_entry_points_show_their_help():
    for command in (["scripts/train.py"], ["-m", "fer_mek.train"], ["scripts/eval.py"]):
        result = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120,
                                cwd=REPO_ROOT, check=True)
        assert "--output-dir" in result.stdout or "--tta" in result.stdout, command


def test_two_processes_give_the_metrics_of_a_single_process_evaluation(tmp_path):
    """Real DDP on CPU (gloo): validation metrics equal a one-process evaluation of the same weights.

    The validation split (13 of 160 synthetic images) does not divide into 2 processes x batch 4: gather_for_metrics
    must drop the samples that pad the uneven last batch.
    """
    run = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO_ROOT / "scripts" / "train.py"), *TINY, "--synthetic-images", "160", "--batch-size", "4", "--epochs", "1",
               "--output-dir", str(run)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((run / "results.json").read_text())
    assert results["environment"]["num_processes"] == 2
    assert results["validation"]["num_samples"] == 13
    single = evaluation.main(["--model", str(run / "best"), "--synthetic-images", "160",
                              "--split", "validation", "--batch-size", "4", "--num-workers", "0"])
    for key in ("accuracy", "mean_class_accuracy", "macro_f1", "confusion_matrix", "num_samples"):
        assert single[key] == results["validation"][key], key


@pytest.mark.slow
def test_compiled_model_trains_and_saves_plain_weights(tmp_path):
    """--compile (torch.compile of the model's forward, about a minute of compilation on a CPU): the saved folder
    has the plain parameter names and loads with the Auto classes."""
    from transformers import AutoModelForImageClassification

    run = tmp_path / "compiled"
    train.main([*TINY, "--epochs", "1", "--compile", "--output-dir", str(run)])
    names = set(load_file(run / "best" / "model.safetensors"))
    assert names and not any("_orig_mod" in name for name in names)
    model = AutoModelForImageClassification.from_pretrained(run / "best")
    assert set(model.state_dict()) >= names
