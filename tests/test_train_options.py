"""The training options that express the MEK sources' settings: command line, validation, ``--print-config``, the
timm-cosine schedule against timm's own scheduler, long epochs, runs without a validation split, and where each
model / optimiser option lands."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from fer_mek import evaluation, train
from fer_mek.train.schedule import StepSchedule

from .conftest import REPO_ROOT

TINY = ["--synthetic-images", "150", "--image-size", "32", "--batch-size", "16", "--num-workers", "0",
        "--log-with", "none", "--auto-augment", "", "--lr", "0.003", "--mixed-precision", "no"]


# ----------------------------------------------------------------------------------------------- command line
def test_every_option_is_a_flag_with_help_and_lists_and_mappings_parse():
    parser = train.build_parser()
    flags = {action.dest for action in parser._actions}
    for f in dataclasses.fields(train.TrainConfig):
        assert f.name in flags, f.name
        assert f.metadata["help"], f.name
    config = train.parse_config(["--data-pipeline", "per-sample", "--crop-scale", "1", "1", "--color-jitter", "0.3", "0.3", "0", "0",
                                 "--backbone-kwargs", '{"img_size": 112, "patch_size": 2}',
                                 "--image-mean", "0.5", "0.5", "0.5", "--image-std", "0.5", "0.5", "0.5",
                                 "--rotation", "15"])
    assert config.crop_scale == [1.0, 1.0] and config.color_jitter == [0.3, 0.3, 0.0, 0.0]
    assert config.backbone_kwargs == {"img_size": 112, "patch_size": 2}
    assert config.image_mean == [0.5] * 3 and config.rotation == 15.0


def test_defaults_are_the_behaviour_before_these_options():
    config = train.parse_config([])
    assert (config.val_split, config.fer2013_test, config.epoch_size, config.train_steps) == (
        "stratified", "PrivateTest", 0, 0)
    assert (config.crop, config.crop_scale, config.crop_ratio, config.rotation, config.hflip, config.color_jitter) == (
        "random-resized", [0.8, 1.0], [0.75, 4 / 3], 10.0, 0.5, [0.4, 0.4, 0.4])
    assert (config.re_mode, config.re_scale, config.image_mean, config.image_std) == (
        "const", [0.02, 1 / 3], None, None)
    # "pytorch": the head init every fer-mek model had (transformers never reached the head containers; see
    # tests/test_init_weights.py), not the N(0, 0.02) the config's docstring used to promise.
    assert (config.balance_weight_rule, config.head_init, config.reset_final_norm, config.weight_decay_all) == (
        "official", "pytorch", False, False)
    assert (config.scheduler, config.schedule_unit, config.warmup_steps, config.warmup_lr, config.min_lr) == (
        "cosine", "step", 0, 0.0, 0.0)
    assert (config.grad_scaler_growth_interval, config.channels_last, config.fused_optimizer) == (2000, True, True)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--val-split", "none", "--early-stopping-patience", "3"], "needs a validation split"),
        (["--val-split", "permutation", "--val-fraction", "0"], "--val-fraction must be in"),
        (["--fer2013-test", "PublicTest+PrivateTest"], "applies to --source fer2013 only"),
        (["--crop-padding", "8"], "applies to --crop padded"),
        (["--crop", "padded", "--crop-padding", "8"], "use --data-pipeline per-sample"),
        (["--re-mode", "torchvision", "--re-prob", "0.5"], "use --data-pipeline per-sample"),
        (["--color-jitter", "0.3"], "--color-jitter takes 3 or 4 numbers"),
        (["--crop-scale", "0.9", "0.5"], "--crop-scale must be two numbers"),
        (["--hflip", "2"], "--hflip is a probability"),
        (["--scheduler", "exponential", "--min-lr", "1e-5"], "--min-lr shapes the cosine schedules"),
        (["--schedule-unit", "epoch", "--warmup-steps", "10"], "with --schedule-unit epoch give --warmup-epochs"),
        (["--drop-path", "0.1", "--backbone-kwargs", '{"drop_path_rate": 0.2}'], "both set the drop-path rate"),
        (["--image-std", "0.5", "0", "0.5"], "--image-std must be positive"),
        (["--train-steps", "-1"], "--train-steps must be 0 or more"),
        (["--init", "timm:"], "needs a timm model name"),
    ],
)
def test_options_that_cannot_work_are_clear_errors_before_training(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        train.main([*argv, "--output-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_a_backbone_kwargs_value_that_is_not_a_json_object_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        train.parse_config(["--backbone-kwargs", "img_size=112"])
    assert "--backbone-kwargs: not valid JSON" in capsys.readouterr().err


def test_resuming_a_run_saved_before_an_option_existed_reads_its_default(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    argv = [*TINY, "--output-dir", str(run)]
    saved = dataclasses.asdict(train.parse_config(argv))
    for name in ("val_split", "epoch_size", "crop", "balance_weight_rule", "warmup_steps", "fused_optimizer"):
        del saved[name]
    (run / "train_config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    train.check_run_folder(train.parse_config([*argv, "--resume"]))
    with pytest.raises(ValueError, match=r"different run \(val_split: 'stratified' -> 'none'\)"):
        train.check_run_folder(train.parse_config([*argv, "--resume", "--val-split", "none"]))


# ----------------------------------------------------------------------------------------------- --print-config
def test_print_config_prints_every_resolved_option_and_touches_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--recipe", "rafdb-swin-t", "--lr", "1e-4", "--output-dir", str(run)]
    with pytest.raises(SystemExit) as exit_info:  # as --help does
        train.main([*argv, "--print-config"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert not run.exists()
    printed = yaml.safe_load(captured.out)
    config, _ = train.parse_command_line([*argv, "--print-config"])
    assert printed == dataclasses.asdict(config)
    assert list(printed) == [f.name for f in dataclasses.fields(train.TrainConfig)]
    assert printed["lr"] == 1e-4 and printed["backbone_kwargs"] == {"img_size": 112, "patch_size": 2}
    assert "--source rafdb needs --data-root" in captured.err  # what training would still need, on stderr
    # The printed configuration is a recipe: loading it gives the same configuration.
    (tmp_path / "printed.yaml").write_text(captured.out)
    again, _ = train.parse_command_line(["--recipe", str(tmp_path / "printed.yaml"), "--print-config"])
    assert dataclasses.asdict(again) == {**dataclasses.asdict(config), "recipe": str(tmp_path / "printed.yaml")}


def test_print_config_from_the_command_lines(tmp_path):
    """``python -m fer_mek.train`` and ``accelerate launch scripts/train.py`` (one CPU process) print and exit 0."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    commands = [
        [sys.executable, "-m", "fer_mek.train"],
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO_ROOT / "scripts" / "train.py")],
    ]
    for command in commands:
        result = subprocess.run([*command, "--recipe", "rafdb-resnet18-imagenet", "--print-config", "--output-dir",
                                 str(tmp_path / "run")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                                env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        printed = yaml.safe_load(result.stdout)
        assert printed["recipe"] == "rafdb-resnet18-imagenet" and printed["balance_weight_rule"] == "mean1"
        assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------- schedules
def schedule_lrs(config: train.TrainConfig, steps: int, steps_per_epoch: int, base_lr: float = 1e-3) -> list[float]:
    """The learning rate each optimizer step runs at, under fer-mek's schedule."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = train.build_scheduler(config, optimizer, steps_per_epoch, num_epochs=config.epochs)
    assert isinstance(scheduler, StepSchedule)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def official_lrs(steps: int, base_lr: float, **kwargs) -> list[float]:
    """timm's CosineLRScheduler stepped as the official MEK loop steps it (train_exp.py:257-258): the optimizer step
    runs, then ``step_update(global_step)``."""
    from timm.scheduler import CosineLRScheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = CosineLRScheduler(optimizer, cycle_mul=1.0, cycle_limit=1, t_in_epochs=False, **kwargs)
    rates = []
    for global_step in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step_update(global_step)
    return rates


@pytest.mark.parametrize("warmup", [0, 20])
def test_timm_cosine_runs_each_step_at_the_official_loops_rate(warmup):
    """Exactly (==) the official sequence: step 0 and 1 at the warm-up start, step k >= 1 at lr(k - 1), the floor
    after the last step; the recipe's 2,000 / 60,000 scaled down to 20 / 100."""
    config = train.parse_config(["--scheduler", "timm-cosine", "--train-steps", "100", "--warmup-steps", str(warmup),
                                 "--warmup-epochs", "0", "--warmup-lr", "3.125e-08", "--min-lr", "3.125e-07"])
    ours = schedule_lrs(config, 110, steps_per_epoch=31)
    theirs = official_lrs(110, 1e-3, t_initial=100, lr_min=3.125e-07, warmup_lr_init=3.125e-08, warmup_t=warmup)
    assert ours == theirs
    if warmup:
        assert ours[:3] == [3.125e-08, 3.125e-08, 3.125e-08 + (1e-3 - 3.125e-08) / 20]
    assert ours[-1] == 3.125e-07


def test_timm_cosine_per_epoch_is_timms_per_epoch_use():
    from timm.scheduler import CosineLRScheduler

    config = train.parse_config(["--scheduler", "timm-cosine", "--schedule-unit", "epoch", "--epochs", "6",
                                 "--warmup-epochs", "2", "--warmup-lr", "1e-5", "--min-lr", "1e-5"])
    ours = schedule_lrs(config, 6 * 4, steps_per_epoch=4)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    timm_scheduler = CosineLRScheduler(optimizer, t_initial=6, lr_min=1e-5, warmup_t=2, warmup_lr_init=1e-5)
    theirs = []
    for epoch in range(6):  # timm's train.py: lr_scheduler.step(epoch + 1) after each epoch
        theirs += [optimizer.param_groups[0]["lr"]] * 4
        timm_scheduler.step(epoch + 1)
    assert ours == theirs


def test_exponential_decays_once_per_epoch_counted_in_optimizer_steps():
    """MEK-CV's ExponentialLR(gamma) stepped once per epoch; a function of the optimizer steps (fp16's skipped steps
    included), so a skipped step cannot move a decay off its epoch boundary."""
    config = train.parse_config(["--scheduler", "exponential", "--gamma", "0.5", "--epochs", "3"])
    assert schedule_lrs(config, 7, steps_per_epoch=3) == pytest.approx([1e-3] * 3 + [5e-4] * 3 + [2.5e-4], rel=1e-12)


def test_cosine_with_a_floor_and_a_warm_up_start():
    config = train.parse_config(["--scheduler", "cosine", "--epochs", "2", "--warmup-steps", "4", "--warmup-lr",
                                 "1e-4", "--min-lr", "1e-5"])
    rates = schedule_lrs(config, 20, steps_per_epoch=10)
    assert rates[0] == 1e-4 and rates[4] == pytest.approx(1e-3)
    assert rates[12] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert min(rates) >= 1e-5


# ----------------------------------------------------------------------------------------------- sampling
def test_long_epochs_are_the_official_samplers_order():
    """epoch_size: randperm(epoch_size) with seed + epoch over the train list repeated in order (the official MEK
    DistributedSampler with one process); keys carry a repetition of their own for the augmentation."""
    n, size, seed = 7, 30, 2048
    sampler = train.EpochSampler(n, seed, epoch_size=size)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert len(keys) == len(sampler) == size
        official = torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        assert [key % n for key in keys] == [v % n for v in official]
        assert len(set(keys)) == size  # every repetition of a sample is augmented on its own
        assert {key // (n * sampler.repetitions) for key in keys} == {epoch}
    weighted = train.EpochSampler(n, seed, weights=[1.0] * 6 + [10.0], epoch_size=size)
    keys = list(weighted)
    assert len(keys) == size and sum(key % n == 6 for key in keys) > size / 3


def test_without_epoch_size_the_sampler_keys_are_as_before():
    sampler = train.EpochSampler(10, 3)
    sampler.set_epoch(2)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5))
    assert list(sampler) == (order + 20).tolist()


# ----------------------------------------------------------------------------------------------- whole runs
def test_a_run_without_validation_reports_its_final_weights(tmp_path):
    """The official Swin protocol in small: no validation split, epochs of epoch_size samples, a run of train_steps
    optimizer steps (the last epoch cut) on timm's cosine; the final weights are reported and loadable as best/."""
    from safetensors.torch import load_file

    from fer_mek.model_card import build_card
    from fer_mek.runs import load_run

    run = tmp_path / "run"
    results = train.main([*TINY, "--val-split", "none", "--epoch-size", "100", "--train-steps", "9",
                          "--scheduler", "timm-cosine", "--warmup-steps", "2", "--warmup-lr", "1e-4",
                          "--min-lr", "1e-5", "--weight-decay-all", "--balance-weight-rule", "mean1",
                          "--head-init", "pytorch", "--image-mean", "0.5", "0.5", "0.5",
                          "--image-std", "0.5", "0.5", "0.5", "--output-dir", str(run)])
    assert results["selection"] == {"metric": None, "best_epoch": None, "final_epoch": 2, "checkpoint": "last",
                                    "ema": False, "reason": train.NO_VALIDATION_REASON}
    assert results["validation"] is None and results["dataset"]["val_split"] == "none"
    assert [row["epoch"] for row in results["history"]] == [1, 2]  # 6 steps, then 3 of the cut second epoch
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == 9
    best, last = load_file(run / "best" / "model.safetensors"), load_file(run / "last" / "model.safetensors")
    assert all(torch.equal(best[key], last[key]) for key in last)
    loaded = load_run(run)
    assert loaded.test_results_apply and loaded.test["accuracy"] == results["test"]["accuracy"]
    config = json.loads((run / "best" / "config.json").read_text())
    assert (config["balance_weight_rule"], config["head_init"], config["image_mean"]) == ("mean1", "pytorch", [0.5] * 3)
    processor = json.loads((run / "best" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5] * 3 and processor["image_std"] == [0.5] * 3
    card = str(build_card(loaded, "someone/fer-mek-test"))
    assert "no validation split" in card and "inverse frequency normalised to mean 1" in card
    # Evaluation rebuilds the run's split (no validation split) from train_config.yaml.
    again = evaluation.main(["--model", str(run / "best"), "--split", "test", "--batch-size", "7", "--num-workers", "0"])
    assert again["confusion_matrix"] == results["test"]["confusion_matrix"]
    with pytest.raises(ValueError, match="trained without a validation split"):
        evaluation.main(["--model", str(run / "best"), "--split", "validation", "--num-workers", "0"])


def test_model_and_optimiser_options_reach_the_model_and_the_optimiser(tmp_path):
    def set_up(*argv):
        trainer = train.Trainer(train.parse_config([*TINY, *argv, "--output-dir", str(tmp_path / str(len(argv)))]))
        trainer.setup()
        return trainer

    default = set_up()
    assert [group["weight_decay"] for group in default.optimizer.param_groups] == [0.0, 0.05]  # biases, norms: none
    assert default.optimizer.optimizer.defaults["fused"]
    mek_cv = set_up("--optimizer", "adam", "--weight-decay", "1e-4", "--weight-decay-all", "--no-fused-optimizer",
                    "--backbone-kwargs", '{"drop_rate": 0.25}', "--drop-path", "0.05")
    optimizer = mek_cv.optimizer.optimizer
    assert type(optimizer) is torch.optim.Adam and not optimizer.defaults["fused"]  # L2 coupled to the gradient
    assert [(group["weight_decay"], len(group["params"])) for group in optimizer.param_groups] == [
        (1e-4, len(list(mek_cv.model.parameters())))]
    model = mek_cv.accelerator.unwrap_model(mek_cv.model)
    assert model.config.backbone_kwargs == {"drop_rate": 0.25, "drop_path_rate": 0.05}


def test_fp16_gets_the_grad_scaler_growth_interval(monkeypatch):
    """The GradScaler that accelerate builds for fp16 on a GPU (its settings are what the Accelerator is given: one
    process cannot switch the Accelerator state to fp16 after other tests ran in fp32)."""
    import accelerate

    seen = {}

    class Stop(Exception):
        pass

    def recording_accelerator(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(accelerate, "Accelerator", recording_accelerator)
    with pytest.raises(Stop):
        train.Trainer(train.parse_config(["--mixed-precision", "fp16", "--grad-scaler-growth-interval", "100"]))
    (handler,) = seen["kwargs_handlers"]
    assert isinstance(handler, accelerate.utils.GradScalerKwargs) and handler.growth_interval == 100
    assert seen["mixed_precision"] == "fp16"


def test_evaluating_on_another_source_drops_the_runs_source_options(tmp_path):
    """A FER-2013 run (test = PublicTest+PrivateTest) evaluated on RAF-DB: its FER-only option does not follow."""
    from fer_mek.evaluation import build_parser, data_options
    from fer_mek.runs import write_train_config

    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    write_train_config(run, {"source": "fer2013", "data_root": "/data/fer2013", "fer2013_test": "PublicTest+PrivateTest",
                             "val_split": "permutation", "split_seed": 42})
    own = data_options(build_parser().parse_args(["--model", str(run / "best")]))
    assert (own.source, own.data_root, own.fer2013_test, own.split_seed) == (
        "fer2013", "/data/fer2013", "PublicTest+PrivateTest", 42)
    other = data_options(build_parser().parse_args(["--model", str(run / "best"), "--source", "rafdb",
                                                    "--data-root", "/data/raf"]))
    assert (other.source, other.data_root, other.fer2013_test, other.val_split) == (
        "rafdb", "/data/raf", "PrivateTest", "permutation")
    other.loader_kwargs()  # no FER-only option left to refuse


@pytest.mark.real_precision
@pytest.mark.parametrize(("flags", "expected"), [("fpu avx512f avx512_bf16 sse", "bf16"), ("fpu amx_bf16", "bf16"),
                                                 ("fpu avx2 avx512f", "no")])
def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_instructions(tmp_path, flags, expected):
    from fer_mek.environment import resolve_mixed_precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    used, why = resolve_mixed_precision("auto", "cpu", cpuinfo=cpuinfo)
    assert used == expected and why.startswith("auto: ")
    assert ("has bf16 instructions" in why) == (expected == "bf16")
    assert resolve_mixed_precision("auto", "cpu", cpuinfo=tmp_path / "absent") == (
        "no", f"auto: cannot tell whether this CPU has bf16 instructions (no {tmp_path / 'absent'})")
    assert resolve_mixed_precision("auto", "mps", cpuinfo=cpuinfo)[0] == "no"
    for given in ("no", "bf16", "fp16"):  # the explicit values are taken as they are
        assert resolve_mixed_precision(given, "cpu", cpuinfo=cpuinfo) == (given, "as configured")


def test_auto_precision_reaches_the_accelerator_and_the_card(monkeypatch):
    """The trainer hands accelerate the resolved precision (not "auto"); the card says what auto chose."""
    import accelerate

    from fer_mek import environment
    from fer_mek.model_card import _precision_text

    seen = {}

    class Stop(Exception):
        pass

    def recording_accelerator(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(accelerate, "Accelerator", recording_accelerator)
    monkeypatch.setattr(environment, "bf16_support", lambda device_type: (True, "this CPU has bf16 instructions (x)"))
    with pytest.raises(Stop):
        train.Trainer(train.parse_config(["--mixed-precision", "auto"]))
    assert seen["mixed_precision"] == "bf16"
    env = {"mixed_precision": "bf16", "mixed_precision_reason": "auto: this CPU has bf16 instructions (x)"}
    assert _precision_text({"mixed_precision": "auto"}, env) == "bf16 (auto: this CPU has bf16 instructions (x))"
    assert _precision_text({"mixed_precision": "no"}, {"mixed_precision": "no"}) == "no"


# ----------------------------------------------------------------------------------------------- step schedule
def test_step_schedule_is_efficientfaces_adjust_learning_rate_and_torchs_step_lr():
    """``--scheduler step``: epoch e runs at ``lr * gamma ** (e // step_size)``, exactly EfficientFace's
    ``adjust_learning_rate`` (main.py:296-300, called at every epoch start, main.py:127), and torch's ``StepLR`` stepped
    once per epoch (which multiplies the previous rate, so it agrees to rounding)."""
    config = train.parse_config(["--scheduler", "step", "--step-size", "3", "--gamma", "0.1", "--epochs", "10",
                                 "--optimizer", "sgd", "--no-nesterov", "--lr", "0.1"])
    steps_per_epoch = 4
    ours = schedule_lrs(config, 10 * steps_per_epoch, steps_per_epoch, base_lr=0.1)
    efficientface = [0.1 * (0.1 ** (epoch // 3)) for epoch in range(10) for _ in range(steps_per_epoch)]
    assert ours == efficientface  # the same float expression: ==
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    step_lr = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
    torchs = []
    for _ in range(10):
        torchs += [optimizer.param_groups[0]["lr"]] * steps_per_epoch
        optimizer.step()
        step_lr.step()
    assert ours == pytest.approx(torchs, rel=1e-12)
    assert sorted(set(ours), reverse=True) == pytest.approx([0.1, 0.01, 1e-3, 1e-4], rel=1e-12)


def test_step_schedule_of_the_efficientface_recipe_and_its_resume():
    """The source's 100 epochs of 96 steps (main.py:28, 30, 31-33; log/RAF-DB.txt: [0/96]): 0.1 for epochs 0-29,
    0.01 for 30-59, 1e-3 for 60-89, 1e-4 for 90-99. The state is JSON (checkpointed with the run) and a scheduler
    restored from it continues the same rates."""
    config = train.parse_config(["--scheduler", "step", "--step-size", "30", "--gamma", "0.1", "--epochs", "100"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = train.build_scheduler(config, optimizer, 96, num_epochs=100)
    assert isinstance(scheduler, StepSchedule) and scheduler.step_size == 30
    for epoch, expected in ((0, 0.1), (29, 0.1), (30, 0.1 * 0.1), (59, 0.1 * 0.1), (60, 0.1 * 0.1 ** 2),
                            (90, 0.1 * 0.1 ** 3), (99, 0.1 * 0.1 ** 3)):
        assert scheduler.lr_at(0.1, epoch * 96) == expected, epoch
        assert scheduler.lr_at(0.1, epoch * 96 + 95) == expected, epoch  # constant within the epoch
    for _ in range(30 * 96 - 1):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.1  # the last step of epoch 29
    state = json.loads(json.dumps(scheduler.state_dict()))
    fresh_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    restored = train.build_scheduler(config, fresh_optimizer, 96, num_epochs=100)
    restored.load_state_dict(state)
    for current in (scheduler, restored):
        current.optimizer.step()
        current.step()
    assert optimizer.param_groups[0]["lr"] == fresh_optimizer.param_groups[0]["lr"] == 0.1 * 0.1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--scheduler", "step", "--step-size", "0"], "--step-size must be a whole number of epochs >= 1"),
        (["--step-size", "10"], "--step-size shapes --scheduler step; --scheduler cosine does not use it"),
        (["--scheduler", "exponential", "--step-size", "10"], "--scheduler exponential does not use it"),
        (["--gamma", "0.5"], "--gamma shapes --scheduler exponential and step; --scheduler cosine does not use it"),
        (["--scheduler", "step", "--gamma", "0"], "--gamma must be > 0"),
        (["--scheduler", "step", "--min-lr", "1e-5"], "--min-lr shapes the cosine schedules"),
    ],
)
def test_step_schedule_options_that_cannot_work_are_clear_errors(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        train.main([*argv, "--output-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_a_run_on_the_step_schedule_changes_the_rate_at_its_epoch_ends(tmp_path):
    """A whole tiny run: with --step-size 1 --gamma 0.5 every epoch halves the rate; results.json's history records
    the rate after each epoch's last step (the next epoch's)."""
    results = train.main([*TINY, "--synthetic-images", "60", "--val-split", "none", "--epochs", "2",
                          "--scheduler", "step", "--step-size", "1", "--gamma", "0.5", "--method", "baseline",
                          "--output-dir", str(tmp_path / "run")])
    rates = [row["lr"] for row in results["history"]]
    assert rates == pytest.approx([0.003 * 0.5, 0.003 * 0.25], rel=1e-12)
