"""Fault injection on training runs (issue 15): a run stopped in every way we know — ``--max-steps``, a crash right
after a ``--checkpoint-every`` save, Ctrl-C, a kill between the two renames of a checkpoint replacement, SIGTERM and
SIGKILL of a real process — and resumed ends with the weights (every tensor) and the history of an uninterrupted run,
with every stochastic layer the recipes use (dropout 0.4, Dropout2d of the conv_bn head, drop path) and the weighted
sampler; checkpoints hold no pickle that runs code; full and read-only disks, damaged run files, Ctrl-C at start-up
end in one clear line.

Slow parts (real processes) are marked ``slow``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import fer_mek.io
from fer_mek import train
from fer_mek.train import Trainer

from .conftest import REPO_ROOT
from .test_train import TINY

# Dropout 0.4 in front of the conv_bn head is a Dropout2d; drop path in every residual block; the weighted sampler;
# the EMA and a step schedule (both kept as safetensors / JSON by the checkpoint). 6 steps per epoch, 2 epochs.
STOCHASTIC = [*TINY, "--head", "conv_bn", "--dropout", "0.4", "--drop-path", "0.1", "--balanced-sampler",
              "--ema-decay", "0.9", "--scheduler", "timm-cosine", "--warmup-steps", "2", "--epochs", "2",
              "--checkpoint-every", "2"]
#: The tensors compared: the saved models, the raw weights and the EMA of the final checkpoint.
COMPARED = ("last/model.safetensors", "best/model.safetensors", "checkpoint/model.safetensors",
            "checkpoint/ema.safetensors")


class Killed(BaseException):
    """What SIGKILL does to the loop, in process: nothing after it runs, nothing catches it."""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    # The user's own thread count (fer_mek.environment.cpu_threads_of_run) keeps these runs at conftest's one thread.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        return run, train.main([*STOCHASTIC, "--output-dir", str(run)])


def assert_same_run(run: Path, results: dict, reference: tuple[Path, dict]) -> None:
    reference_run, reference_results = reference
    assert results["history"] == reference_results["history"]
    assert results["selection"] == reference_results["selection"]
    assert results["test"] == reference_results["test"]
    for name in COMPARED:
        if not (reference_run / name).exists():  # a run without EMA
            continue
        expected, actual = load_file(reference_run / name), load_file(run / name)
        assert expected.keys() == actual.keys(), name
        differing = [key for key in expected if not torch.equal(expected[key], actual[key])]
        assert not differing, f"{name}: {len(differing)} of {len(expected)} tensors differ, e.g. {differing[:3]}"


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith((".tmp-", ".new-", ".old-", ".del-")))


def test_resume_after_max_steps_is_exact(straight, tmp_path):
    run = tmp_path / "run"
    assert train.main([*STOCHASTIC, "--max-steps", "5", "--output-dir", str(run)]) == {"finished": False,
                                                                                       "global_step": 5}
    assert_same_run(run, train.main([*STOCHASTIC, "--resume", "--output-dir", str(run)]), straight)


def test_resume_with_per_sample_decoding_in_worker_processes_is_exact(tmp_path):
    """The per-sample pipeline in two DataLoader worker processes (their seeds come from the loader's generator, not
    from the global one that dropout draws from)."""
    argv = [*TINY, "--data-pipeline", "per-sample", "--num-workers", "2", "--head", "conv_bn", "--dropout", "0.4",
            "--drop-path", "0.1", "--balanced-sampler", "--epochs", "2"]
    reference = tmp_path / "straight", train.main([*argv, "--output-dir", str(tmp_path / "straight")])
    run = tmp_path / "run"
    train.main([*argv, "--max-steps", "4", "--output-dir", str(run)])
    assert_same_run(run, train.main([*argv, "--resume", "--output-dir", str(run)]), reference)


def test_resume_after_a_kill_right_after_a_checkpoint_every_save_is_exact(straight, tmp_path, monkeypatch):
    original = Trainer.save_checkpoint

    def killed_after_step_8(self):
        original(self)
        if self.state.global_step == 8:  # in epoch 2, after a --checkpoint-every save: the process dies
            raise Killed

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "save_checkpoint", killed_after_step_8)
        with pytest.raises(Killed):
            train.main([*STOCHASTIC, "--output-dir", str(run)])
    assert json.loads((run / "checkpoint" / "trainer_state.json").read_text())["global_step"] == 8
    assert_same_run(run, train.main([*STOCHASTIC, "--resume", "--output-dir", str(run)]), straight)


def test_resume_after_ctrl_c_mid_epoch_is_exact(straight, tmp_path, monkeypatch):
    original = Trainer.train_step

    def ctrl_c_at_step_3(self, inputs):
        outputs = original(self, inputs)
        if self.state.global_step == 2:  # this is step 3: Ctrl-C arrives while it runs
            self._on_interrupt(signal.SIGINT, None)
        return outputs

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", ctrl_c_at_step_3)
        assert train.main([*STOCHASTIC, "--output-dir", str(run)]) == {"interrupted": True, "signal": "SIGINT"}
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)
    assert_same_run(run, train.main([*STOCHASTIC, "--resume", "--output-dir", str(run)]), straight)


@pytest.mark.parametrize("left", ["both copies", "old copy only"])
def test_a_kill_between_the_two_renames_of_a_checkpoint_is_recovered(straight, tmp_path, monkeypatch, capsys,
                                                                      left):
    """Issue 15 item 5: the old checkpoint moved aside, the new one not yet in place: --resume puts a complete copy
    back (says so), removes the leftovers, and still ends exactly as the uninterrupted run."""
    real_replace = os.replace

    def killed_after_retiring(source, destination):
        real_replace(source, destination)
        if Path(destination).parent.name.startswith(".old-checkpoint-") and "step 6" in killed_after_retiring.at:
            raise Killed

    killed_after_retiring.at = ""
    original = Trainer.save_checkpoint

    def tracking(self):
        killed_after_retiring.at = f"step {self.state.global_step}"
        original(self)

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "save_checkpoint", tracking)
        patch.setattr(fer_mek.io.os, "replace", killed_after_retiring)
        with pytest.raises(Killed):
            train.main([*STOCHASTIC, "--output-dir", str(run)])
    assert not (run / "checkpoint").exists()
    assert [name.split("-")[0] for name in leftovers(run)] == [".new", ".old"]
    if left == "old copy only":
        shutil.rmtree(next(run.glob(".new-checkpoint-*")))
    capsys.readouterr()
    results = train.main([*STOCHASTIC, "--resume", "--output-dir", str(run)])
    out = capsys.readouterr().out
    expected = "the complete new copy" if left == "both copies" else "the previous copy"
    assert f"recovered {run / 'checkpoint'} from {expected}" in out
    assert "resumed from" in out and (f"epoch 1, step {6 if left == 'both copies' else 4}" in out
                                      or "epoch 2, step 0" in out)
    assert leftovers(run) == []
    assert_same_run(run, results, straight)


def test_an_old_style_checkpoint_with_pickled_ema_and_schedule_resumes_without_unpickling_code(straight, tmp_path):
    """Checkpoints of earlier versions: the EMA and the step schedule as accelerate's custom_checkpoint_<i>.pkl. They
    are read with weights_only=True, rewritten as safetensors / JSON, and the resumed run is still exact."""
    run = tmp_path / "run"
    train.main([*STOCHASTIC, "--max-steps", "5", "--output-dir", str(run)])
    checkpoint = run / "checkpoint"
    torch.save(json.loads((checkpoint / "schedule.json").read_text()), checkpoint / "custom_checkpoint_0.pkl")
    torch.save(load_file(checkpoint / "ema.safetensors"), checkpoint / "custom_checkpoint_1.pkl")
    for name in ("schedule.json", "ema.safetensors", "train_config.yaml"):
        (checkpoint / name).unlink()
    results = train.main([*STOCHASTIC, "--resume", "--output-dir", str(run)])
    assert not list(checkpoint.glob("custom_checkpoint_*"))
    assert_same_run(run, results, straight)


# ------------------------------------------------------------------------------------------ real processes
def _train_process(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "fer_mek.train", *STOCHASTIC, *extra, "--output-dir", str(run)],
                            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(run: Path, process: subprocess.Popen, after: int = 0, timeout: float = 300) -> int:
    """Wait until the process has saved a checkpoint past optimizer step ``after``; its step."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no checkpoint past step {after} in {run}"
        try:
            step = json.loads((run / "checkpoint" / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError):  # not there yet, or being replaced
            step = -1
        if step > after:
            return step
        time.sleep(0.05)


def test_sigterm_checkpoints_and_exits_like_ctrl_c(straight, tmp_path):
    run = tmp_path / "run"
    process = _train_process(run, "--checkpoint-every", "1")
    _wait_for_step(run, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM: finishing the current step, saving a checkpoint" in err and "Traceback" not in err
    assert_same_run(run, train.main([*STOCHASTIC, "--resume", "--output-dir", str(run)]), straight)


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_exactly(straight, tmp_path):
    """Three SIGKILLs of a real training process at random moments after its first checkpoint (during a step, a
    checkpoint save or a rename, whatever comes), each followed by a resume in a new process; then the rest in
    process: the weights and history of the uninterrupted run."""
    import random

    rng = random.Random(15)
    run = tmp_path / "run"
    step = 0
    for attempt in range(3):
        process = _train_process(run, "--checkpoint-every", "1", *(["--resume"] if attempt else []))
        step = _wait_for_step(run, process, after=step)
        time.sleep(rng.uniform(0.0, 0.5))
        process.kill()
        process.communicate(timeout=60)
        assert step < 12, "the run finished before it was killed"
    results = train.main([*STOCHASTIC, "--resume", "--output-dir", str(run)])
    assert leftovers(run) == []
    assert_same_run(run, results, straight)


# ------------------------------------------------------------------------------------- planted pickles (item 7)
class Payload:
    """A pickle that creates a marker file when it is unpickled with code execution allowed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory):
    """A stopped run with every kind of checkpoint file: EMA (safetensors), accelerate's scheduler.bin (the default
    cosine), optimizer, random states, trainer state, the options' copy."""
    run = tmp_path_factory.mktemp("checkpointed") / "run"
    argv = [*TINY, "--epochs", "2", "--dropout", "0.4", "--ema-decay", "0.9"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        train.main([*argv, "--max-steps", "3", "--output-dir", str(run)])
    return run, argv


def test_the_planted_payload_runs_when_unpickled_unsafely(tmp_path):
    """The control: the payload of the next test does run code under torch.load(weights_only=False)."""
    torch.save({"state": Payload(tmp_path / "marker")}, tmp_path / "evil.bin")
    torch.load(tmp_path / "evil.bin", weights_only=False)
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
                                  "trainer_state.json", "train_config.yaml", "ema.safetensors",
                                  "custom_checkpoint_0.pkl", "scaler.pt", "sampler.bin", "pytorch_model.bin"])
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_planted_pickle_in_a_checkpoint_never_runs(checkpointed_run, tmp_path, name, how):
    run, argv = checkpointed_run
    path = run / "checkpoint" / name
    before = path.read_bytes() if path.exists() else None
    marker = tmp_path / "marker"
    if how == "torch.save":
        torch.save({"state": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))
    try:
        with pytest.raises(ValueError, match=rf"{path} cannot be read safely .*it is not loaded"):
            train.main([*argv, "--resume", "--output-dir", str(run)])
        assert train.cli_main([*argv, "--resume", "--output-dir", str(run)]) == 1
    finally:
        if before is None:
            path.unlink()
        else:
            path.write_bytes(before)
    assert not marker.exists()


def test_the_checkpoint_holds_no_pickle_of_ours(checkpointed_run):
    run, _ = checkpointed_run
    names = sorted(p.name for p in (run / "checkpoint").iterdir())
    assert names == ["ema.safetensors", "model.safetensors", "optimizer.bin", "random_states_0.pkl",
                     "scheduler.bin", "train_config.yaml", "trainer_state.json"]


# ---------------------------------------------------------------------------------- crashes and clear lines
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    import errno

    import accelerate.checkpointing

    run = tmp_path / "run"
    argv = [*TINY, "--epochs", "1", "--checkpoint-every", "2", "--output-dir", str(run)]
    train.main([*argv, "--max-steps", "2"])
    kept = (run / "checkpoint" / "optimizer.bin").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    for failure in (full_disk, lambda *a, **k: (_ for _ in ()).throw(RuntimeError(
            "[enforce fail at inline_container.cc:664] . unexpected pos 2048 vs 1990"))):
        with monkeypatch.context() as patch:
            patch.setattr(accelerate.checkpointing, "save", failure)
            capsys.readouterr()
            assert train.cli_main([*argv, "--resume"]) == 1
        captured = capsys.readouterr().err  # progress bars, then the error
        assert "Traceback" not in captured
        err = captured.strip().splitlines()[-1]
        assert err.startswith(f"error: could not write the checkpoint {run}/.tmp-checkpoint-4 (")
        assert "the disk is full" in err and err.endswith(f"{run / 'checkpoint'} (if any) is intact")
        assert (run / "checkpoint" / "optimizer.bin").read_bytes() == kept
        assert leftovers(run) == []
    assert train.main([*argv, "--resume"])["history"]


def test_a_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert train.cli_main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: could not write the run folder (--output-dir) {tmp_path / 'run'} (Read-only file system): "
                   "the folder is not writable: fix its permissions or choose another folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_for_real(tmp_path, capsys):
    tmp_path.chmod(0o555)
    try:
        assert train.cli_main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path / "run")]) == 1
    finally:
        tmp_path.chmod(0o755)
    assert "the folder is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["empty", "cut"])
def test_an_empty_or_cut_train_config_resumes_from_the_checkpoints_copy(tmp_path, damage):
    run = tmp_path / "run"
    argv = [*TINY, "--epochs", "1", "--dropout", "0.4", "--output-dir", str(run)]
    train.main([*argv, "--max-steps", "2"])
    text = (run / "train_config.yaml").read_text()
    (run / "train_config.yaml").write_text("" if damage == "empty" else text[: len(text) // 3])
    assert train.main([*argv, "--resume"])["history"]
    rewritten = yaml.safe_load((run / "train_config.yaml").read_text())
    assert rewritten.keys() == yaml.safe_load(text).keys() and rewritten["dropout"] == 0.4


def test_an_empty_train_config_without_a_copy_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    argv = [*TINY, "--epochs", "1", "--output-dir", str(run)]
    train.main([*argv, "--max-steps", "2"])
    (run / "checkpoint" / "train_config.yaml").unlink()  # a checkpoint of an earlier version
    (run / "train_config.yaml").write_text("")
    with pytest.raises(ValueError, match=rf"--resume: {run / 'train_config.yaml'} is empty \(a write that did not "
                                         "finish\\?\\); restore it"):
        train.main([*argv, "--resume"])


def test_the_same_output_folder_spelt_relative_or_absolute_is_the_same_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [*TINY, "--epochs", "1"]
    train.main([*argv, "--max-steps", "2", "--output-dir", str(tmp_path / "runs" / "a")])
    assert train.main([*argv, "--resume", "--output-dir", "runs/./a/"])["history"]


def test_ctrl_c_during_start_up_is_one_line_without_a_traceback(tmp_path, monkeypatch, capsys):
    def ctrl_c(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "load_data", ctrl_c)
    assert train.cli_main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: stopped at once") and len(err.strip().splitlines()) == 1


def test_skipped_items_are_said_on_the_console(tmp_path):
    from types import SimpleNamespace

    printed = []
    fake = SimpleNamespace(run_dir=tmp_path, print=printed.append, data_metadata={"skipped": [
        {"file": "labels.txt", "line": 7, "reason": "unknown label 9"}, {"file": "b.jpg", "line": None,
                                                                         "reason": "cannot be decoded"}]})
    Trainer.note_skipped_items(fake)
    assert printed == [f"note: 2 bad item(s) skipped (--skip-bad), e.g. labels.txt, line 7: unknown label 9; all are "
                       f"listed in {tmp_path / 'results.json'} under dataset.skipped"]
    fake.data_metadata = {"skipped": []}
    Trainer.note_skipped_items(fake)
    assert len(printed) == 1


def test_run_files_get_ordinary_permissions(straight):
    run, _ = straight
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.json", "train_config.yaml", "confusion_matrix.png", "training_curves.png",
                 "best/model.safetensors", "last/config.json", "checkpoint/model.safetensors",
                 "checkpoint/trainer_state.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (run / "best").stat().st_mode & 0o777 == 0o777 & ~umask


# ------------------------------------------------------------------------------------- CPU threads (issue 14)
def test_a_cpu_process_gets_its_share_of_the_cores():
    from fer_mek.environment import cpu_threads_of_run, cpu_threads_per_process, usable_cores

    cores = usable_cores()
    assert cpu_threads_per_process(1) == cores and cpu_threads_per_process(cores * 4) == 1
    assert cpu_threads_per_process(2) == max(1, cores // 2)
    # accelerate launch sets OMP_NUM_THREADS (1 without --num_cpu_threads_per_process): the cores are used anyway.
    launched = {"OMP_NUM_THREADS": "1", "ACCELERATE_DYNAMO_BACKEND": "NO"}
    assert cpu_threads_of_run(1, launched) == cores and cpu_threads_of_run(2, launched) == max(1, cores // 2)
    assert cpu_threads_of_run(1, {}) == cores
    assert cpu_threads_of_run(1, {"OMP_NUM_THREADS": "1"}) is None  # the user's own choice


def test_training_raises_one_thread_to_the_cores_and_restores_it(tmp_path, monkeypatch, capsys):
    from fer_mek.environment import usable_cores

    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")  # as under `accelerate launch`, with its OMP_NUM_THREADS=1
    torch.set_num_threads(1)
    results = train.main([*TINY, "--epochs", "1", "--output-dir", str(tmp_path / "run")])
    assert results["environment"]["cpu_threads"] == usable_cores()
    assert f"1 process(es) on cpu ({usable_cores()} CPU threads each)" in capsys.readouterr().out
    assert torch.get_num_threads() == 1
