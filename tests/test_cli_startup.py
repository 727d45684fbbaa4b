"""Every entry point answers ``--help`` and ``--version`` without importing the model stack (issue 14).

The parsers live in :mod:`fer_mek_cli` (standard library and PyYAML only); ``import fer_mek`` registers the Auto
classes and so loads torch and transformers (seconds). Checked by what a process imports (``-X importtime``), not
by a timing: the start-up times themselves are in BENCHMARKS.md ("Start-up of the command lines").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.name for path in (REPO_ROOT / "scripts").glob("*.py"))
#: The ``fer-mek`` command and its subcommands, run through its console-script function.
COMMAND = [sys.executable, "-c", "import sys; from fer_mek_cli.command import main; sys.exit(main())"]
SUBCOMMANDS = ["predict", "export", "convert"]
#: Top-level packages that ``--help`` must not load.
HEAVY = {"torch", "transformers", "timm", "numpy", "PIL", "datasets", "accelerate", "safetensors", "fer_mek", "cv2",
         "huggingface_hub", "evaluate", "torchvision", "gradio", "matplotlib"}


def _run(argv: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=120)
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    return done, imported - {"imported package"}


def _entry_points() -> list[tuple[str, list[str]]]:
    points = [(name, [sys.executable, f"scripts/{name}"]) for name in SCRIPTS]
    points.append(("fer-mek", COMMAND))
    points += [(f"fer-mek {sub}", [*COMMAND, sub]) for sub in SUBCOMMANDS]
    return points


@pytest.mark.parametrize(("name", "argv"), _entry_points(), ids=[name for name, _ in _entry_points()])
def test_help_does_not_import_the_model_stack(name, argv):
    done, imported = _run([*argv, "--help"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    assert imported & HEAVY == set(), f"{name} --help imports {sorted(imported & HEAVY)}"


@pytest.mark.parametrize(("name", "argv"), _entry_points()[:-len(SUBCOMMANDS)],
                         ids=[name for name, _ in _entry_points()[:-len(SUBCOMMANDS)]])
def test_version_does_not_import_the_model_stack(name, argv):
    from fer_mek_cli.version import __version__

    done, imported = _run([*argv, "--version"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"fer-mek {__version__}"
    assert imported & HEAVY == set(), f"{name} --version imports {sorted(imported & HEAVY)}"


def test_the_serving_mirrors_equal_their_one_place():
    """image_processing_mek.py is copied beside the weights and cannot import fer_mek_cli: the command lines' copies
    of its choices must stay equal to it."""
    from fer_mek.image_processing_mek import SERVING_DEFAULTS, TTA_MODES
    from fer_mek_cli import serving

    assert serving.TTA_MODES == TTA_MODES
    assert SERVING_DEFAULTS["face_margin"] == serving.DEFAULT_MARGIN


def test_fer_mek_imports_the_same_objects():
    """The library uses the command lines' values, not copies of them."""
    from fer_mek import __version__
    from fer_mek.data import common, fer2013, sources, synthetic, transforms
    from fer_mek_cli import defaults, version

    assert __version__ is version.__version__
    assert common.VAL_SPLITS is defaults.VAL_SPLITS
    assert fer2013.FER2013_TEST_SPLITS is defaults.FER2013_TEST_SPLITS
    assert synthetic.SYNTHETIC_NUM_IMAGES == defaults.SYNTHETIC_NUM_IMAGES
    assert list(sources.SOURCES) == list(defaults.SOURCE_ROOTS)
    assert transforms.CROP_SCALE is defaults.CROP_SCALE


def test_the_training_choices_equal_the_models():
    """The trainer's choices that name model-side values (whose one place is a flat remote-code file) stay equal."""
    from fer_mek.configuration_mek import HEAD_INITS, HEADS
    from fer_mek.data.sources import SOURCES
    from fer_mek.losses import BALANCE_WEIGHT_RULES
    from fer_mek.train import config
    from fer_mek_cli import train

    assert train.CHOICES["head"] == HEADS
    assert set(train.CHOICES["head_init"]) == set(HEAD_INITS)  # the help lists the default first
    assert train.CHOICES["balance_weight_rule"] == BALANCE_WEIGHT_RULES
    assert train.CHOICES["source"] == tuple(SOURCES)
    assert config.TrainConfig is train.TrainConfig and config.build_parser is train.build_parser
