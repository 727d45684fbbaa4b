"""What a new user meets first: a mistyped model folder, a device that is not there, an option out of range,
``--version``, ``--help``, and how attention maps are drawn. Every error is one line, with exit status 2."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from PIL import Image

import fer_mek
from fer_mek import cli, demo, evaluation
from fer_mek.locations import DeviceError, ModelLoadError, is_hub_id, locate_model, resolve_device

from .conftest import REPO_ROOT


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a run (runs/synthetic-mek/best and last, model folders) and a stray file."""
    for checkpoint in ("best", "last"):
        folder = tmp_path / "runs" / "synthetic-mek" / checkpoint
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a model")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


# ------------------------------------------------------------------------------------------------ --model
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("runs/synthetic-mek/bst", "no such folder: runs/synthetic-mek/bst (did you mean runs/synthetic-mek/best?)"),
        ("runs/synthetic-mk", "no such folder: runs/synthetic-mk (did you mean runs/synthetic-mek/best?)"),
        ("./runs/nothing", "no such folder: ./runs/nothing (did you mean runs/synthetic-mek/best?)"),
        ("~/runs/synthetic-mek/lst", "no such folder: ~/runs/synthetic-mek/lst (did you mean "),
        ("/no/such/model", "no such folder: /no/such/model"),
        ("a/b/c", "no such folder: a/b/c"),
        ("runs\\synthetic-mek", "no such folder: runs\\synthetic-mek"),
        ("runs", "runs: folder has no config.json; pass a folder written by save_pretrained (did you mean "
                 "runs/synthetic-mek/best?)"),
        ("notes.txt", "notes.txt: a file, not a model folder"),
    ],
)
def test_a_local_looking_path_that_is_not_a_model_folder_says_so(workspace: Path, name: str, message: str) -> None:
    with pytest.raises(ModelLoadError) as error:
        locate_model(name)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_model_folders_and_hub_ids_pass(workspace: Path) -> None:
    assert locate_model("runs/synthetic-mek/best") == "runs/synthetic-mek/best"
    assert locate_model("~/runs/synthetic-mek/best") == str(workspace / "runs" / "synthetic-mek" / "best")
    assert locate_model("alice/fer-mek-rafdb") == "alice/fer-mek-rafdb"  # no folder alice/ here: a Hub id
    assert [is_hub_id(n) for n in ("a/b", "gpt2", "a/b/c", "a--b", "-a/b", "a/b.git", "a b", "")] == [
        True, True, False, False, False, False, False, False]


def test_a_hub_form_name_that_is_neither_says_both(workspace: Path) -> None:
    """``run/nonexistent`` (no folder ``run`` here) is tried as a Hub id; offline, the error says there is no such
    folder (and which one was probably meant), then why the Hub could not help."""
    from fer_mek.inference import load_model

    with pytest.raises(ModelLoadError) as error:
        load_model("run/nonexistent", "cpu")
    text = str(error.value)
    assert text.startswith("no such folder: run/nonexistent (did you mean runs/synthetic-mek/best?); as a Hub id it "
                           "cannot be loaded either (") and "\n" not in text


def test_every_command_reports_a_mistyped_model_in_one_line(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = "error: no such folder: runs/synthetic-mek/bst (did you mean runs/synthetic-mek/best?)"
    image = workspace / "face.png"
    Image.new("RGB", (32, 32)).save(image)
    commands = [
        lambda: cli.main(["predict", str(image), "--model", "runs/synthetic-mek/bst"]),
        lambda: cli.main(["export", "--model", "runs/synthetic-mek/bst", "--output", "x.onnx"]),
        lambda: evaluation.cli_main(["--model", "runs/synthetic-mek/bst"]),
        lambda: demo.main(["--model", "runs/synthetic-mek/bst"]),
    ]
    for command in commands:
        assert command() == 2
        assert capsys.readouterr().err.strip() == expected


# ------------------------------------------------------------------------------------------------ --device
def test_devices_that_are_not_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    for device, message in (("cuda", "device 'cuda': CUDA is not available on this machine"),
                            ("cuda:3", "device 'cuda:3': CUDA is not available on this machine"),
                            ("mps", "device 'mps': Apple's MPS is not available on this machine"),
                            ("gpu", "unknown device 'gpu'")):
        with pytest.raises(DeviceError, match=message) as error:
            resolve_device(device)
        assert "\n" not in str(error.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"device 'cuda:3': this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:3")


def test_commands_with_a_missing_device_exit_2_in_one_line(
    saved_tiny_model: tuple[Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = str(saved_tiny_model[0])
    image = tmp_path / "face.png"
    Image.new("RGB", (32, 32)).save(image)
    for command in (lambda: evaluation.cli_main(["--model", folder, "--device", "cuda"]),
                    lambda: cli.main(["predict", str(image), "--model", folder, "--device", "cuda:1"])):
        assert command() == 2
        err = capsys.readouterr().err
        assert err.startswith("error: device 'cuda") and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ option ranges
@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        (cli.main, ["predict", "x.jpg", "-m", "m", "--min-confidence", "5"], "argument --min-confidence: '5' is not a "
                                                                             "number from 0 to 1"),
        (cli.main, ["predict", "x.jpg", "-m", "m", "--top-k", "0"], "argument --top-k: '0' is not an integer >= 1"),
        (cli.main, ["predict", "-m", "m", "--camera", "-1"], "argument --camera: '-1' is not an integer >= 0"),
        (cli.main, ["predict", "x.jpg", "-m", "m", "--margin", "nan"], "argument --margin: 'nan' is not a number >= 0"),
        (cli.main, ["export", "-m", "m", "-o", "x.onnx", "--atol", "0"], "argument --atol: '0' is not a number > 0"),
        (evaluation.cli_main, ["--model", "m", "--batch-size", "0"], "argument --batch-size: '0' is not an integer"),
        (evaluation.cli_main, ["--model", "m", "--val-fraction", "1.5"], "argument --val-fraction: '1.5' is not a "
                                                                          "number from 0 to 1"),
        (evaluation.cli_main, ["--model", "m", "--num-workers", "-2"], "argument --num-workers: '-2' is not an "
                                                                        "integer >= 0"),
        (demo.main, ["--per-class", "0"], "argument --per-class: '0' is not an integer >= 1"),
        (demo.main, ["--face-size", "big"], "argument --face-size: 'big' is not an integer >= 1"),
    ],
)
def test_options_out_of_range_are_usage_errors(
    command, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]  # noqa: ANN001
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ --version, --help
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    # pyproject.toml reads the version from fer_mek/version.py (its one place); the installed metadata agrees
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fer_mek_cli.version.__version__"}
    assert fer_mek.__version__ == importlib.metadata.version("fer-mek")
    from fer_mek import benchmark, convert, publish, train
    from fer_mek.data import prepare

    # every entry point of scripts/ and the fer-mek console script
    for command in (cli.main, evaluation.cli_main, demo.main, train.cli_main, publish.main, convert.cli_main,
                    prepare.main, benchmark.cli_main):
        with pytest.raises(SystemExit) as exit_info:
            command(["--version"])
        assert exit_info.value.code == 0 and capsys.readouterr().out == f"fer-mek {fer_mek.__version__}\n"


def test_help_loads_nothing_beyond_the_registration() -> None:
    """``--help`` answers before the model, data, drawing or serving stacks load: what stays is what ``import
    fer_mek`` needs to register MEK with the transformers Auto classes (torch and transformers' model classes)."""
    code = (
        "import contextlib, io, sys\n"
        "from fer_mek import cli, demo\n"
        "for command, argv in ((cli.main, ['--help']), (cli.main, ['predict', '--help']),\n"
        "                      (cli.main, ['export', '--help']), (demo.main, ['--help'])):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        command(argv)\n"
        "heavy = {'datasets', 'cv2', 'gradio', 'matplotlib', 'onnx', 'sklearn', 'evaluate'}\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True)
    assert completed.stdout.strip() == "[]", completed.stdout


# ------------------------------------------------------------------------------------------------ attention drawings
def _face(attention: np.ndarray | None, size: int = 96):  # noqa: ANN202
    from fer_mek.faces import FaceBox
    from fer_mek.results import FacePrediction

    crop = Image.new("RGB", (size, size), (200, 170, 150))
    box = FaceBox(20, 16, 56, 64, 1.0, None)  # in the picture; the crop starts at (0, 0): the same pixels
    probabilities = np.array([0.1, 0.6, 0.3], dtype=np.float32)
    return FacePrediction(box, probabilities, ("a", "b", "c"), crop, np.array([[1.0, 0, 0], [0, 1.0, 0]]), attention)


def test_a_coarse_map_is_drawn_as_blocks_a_fine_one_smoothly() -> None:
    from fer_mek.annotate import attention_heatmap

    coarse = attention_heatmap(np.array([[0.0, 1.0], [0.25, 0.5]]), (64, 64))
    assert len(np.unique(coarse.reshape(-1, 3), axis=0)) == 4  # four cells, four colours: no invented gradient
    fine = attention_heatmap(np.linspace(0, 1, 49).reshape(7, 7), (64, 64))
    assert len(np.unique(fine.reshape(-1, 3), axis=0)) > 40  # bilinear
    np.testing.assert_array_equal(coarse[0, 0], [68, 1, 84])  # viridis' 0 (dark purple), not jet's blue


def test_the_map_covers_the_face_box_only_and_has_a_legend() -> None:
    from fer_mek.annotate import annotate_image, face_attention_overlay, face_card

    face = _face(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    picture = Image.new("RGB", (320, 320), (200, 170, 150))
    drawn = np.asarray(annotate_image(picture, [face], panel=False, min_side=320, alpha=0.5)).astype(int)
    original = np.asarray(picture).astype(int)
    assert np.array_equal(drawn[30:60, 8], original[30:60, 8])  # left of the box: untouched
    assert np.array_equal(drawn[30:60, 90:200], original[30:60, 90:200])  # the crop's margin right of it: untouched
    assert np.abs(drawn[40, 30] - original[40, 30]).sum() > 30  # inside the box: coloured
    assert np.abs(drawn[-30:, :120] - original[-30:, :120]).sum() > 0  # the legend in the bottom-left corner
    assert np.array_equal(drawn[-30:, 200:], original[-30:, 200:])
    overlay = np.asarray(face_attention_overlay(face)).astype(int)
    assert np.array_equal(overlay[5, 5], [200, 170, 150]) and not np.array_equal(overlay[40, 40], [200, 170, 150])
    card = face_card(face, 2)
    assert card.size == (800, 340)
    assert face_card(_face(None)).size == (800, 340)  # a model without maps: the crop and the bars

