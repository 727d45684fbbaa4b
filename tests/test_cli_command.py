"""The light command lines of ``fer-mek`` (predict / export / convert), ``scripts/convert_checkpoint.py`` and
``scripts/benchmark.py`` (:mod:`fer_mek_cli.command`, :mod:`fer_mek_cli.convert`, :mod:`fer_mek_cli.benchmark`): one
parser each, shared with the library; mirrors equal to their one place; usage errors answered before the library
loads; the commands themselves handed to the library.

``tests/test_cli_startup.py`` checks ``--help`` and ``--version`` of every entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fer_mek_cli import benchmark as cli_benchmark
from fer_mek_cli import command as cli_command
from fer_mek_cli import convert as cli_convert

REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- one place per value
def test_the_label_set_mirror_equals_labels_py():
    """labels.py is copied beside the weights and cannot import fer_mek_cli: ``--labels``' choices mirror it."""
    from fer_mek.labels import LABEL_SETS

    assert list(cli_convert.LABEL_SET_NAMES) == sorted(LABEL_SETS)


def test_the_published_repository_is_the_one_of_the_library():
    from fer_mek import convert, published

    assert published.PUBLISHED_REPO == cli_convert.PUBLISHED_REPO
    assert convert.PUBLISHED_REPO == cli_convert.PUBLISHED_REPO


def test_the_library_uses_the_command_lines_parsers_and_names():
    from fer_mek import benchmark, cli, convert
    from fer_mek.benchmark import ablation, data

    assert cli.build_parser is cli_command.build_parser
    assert convert.build_parser is cli_convert.build_parser
    assert convert.DESCRIPTION is cli_convert.DESCRIPTION
    assert benchmark.build_parser is cli_benchmark.build_parser
    assert benchmark.FIGURE_KINDS is cli_benchmark.FIGURE_KINDS
    assert benchmark.DEFAULT_KINDS is cli_benchmark.DEFAULT_KINDS
    assert data.DATA_SOURCES is cli_benchmark.DATA_SOURCES
    assert data.MIN_DATA_IMAGES == cli_benchmark.MIN_DATA_IMAGES
    assert ablation.ABLATION_VARIANTS is cli_benchmark.ABLATION_VARIANTS
    assert ablation.parse_seeds is cli_benchmark.parse_seeds


def test_the_console_script_is_the_light_command():
    import tomllib

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"]["fer-mek"] == "fer_mek_cli.command:main"


def test_the_parsers_keep_their_program_names():
    assert cli_command.build_parser().prog == "fer-mek"
    assert cli_convert.build_parser("fer-mek convert").prog == "fer-mek convert"
    assert cli_benchmark.build_parser().prog == "benchmark.py"
    assert cli_benchmark.checkout_of(str(REPO_ROOT / "scripts" / "benchmark.py")) == REPO_ROOT


# ------------------------------------------------------------------------------------------- usage errors, light
USAGE_ERRORS = [
    ("fer_mek_cli.command", ["predict", "x.jpg", "-m", "m", "--top-k", "0"], "argument --top-k: '0' is not an integer"),
    ("fer_mek_cli.command", ["export", "-m", "m"], "the following arguments are required: --output/-o"),
    ("fer_mek_cli.command", ["convert", "--kind", "nope", "--output", "x"], "fer-mek convert: error: argument --kind"),
    ("fer_mek_cli.convert", ["--image-size", "0", "--output", "x"], "argument --image-size: '0' is not an integer"),
    ("fer_mek_cli.benchmark", ["--only", "nonsense"], "--only: unknown or no name(s) ['nonsense']"),
    ("fer_mek_cli.benchmark", ["--data-images", "5"], "--data-images must be at least 100"),
]


@pytest.mark.parametrize(("module", "argv", "message"), USAGE_ERRORS, ids=[" ".join(a[:2]) for _, a, _ in USAGE_ERRORS])
def test_usage_errors_answer_before_the_library_loads(module, argv, message):
    code = (
        f"import sys\nfrom {module} import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "finally:\n    print(sorted(name for name in ('fer_mek', 'torch') if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------- the commands run
def test_convert_runs_the_library_with_the_same_arguments(tmp_path, capsys):
    output = str(tmp_path / "out")
    assert cli_convert.main(["--output", output]) == 1
    assert cli_command.main(["convert", "--output", output]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: pass --checkpoint FILE (or REPO_ID/FILENAME[@REVISION]), or --all [--repo REPO_ID]"] * 2


def test_the_benchmark_checks_that_need_the_library_still_run():
    with pytest.raises(SystemExit) as exit_info:
        cli_benchmark.main(["--num-images", "5"])
    assert exit_info.value.code == 2


def test_the_benchmark_passes_a_value_that_looks_like_an_option():
    args = cli_benchmark.build_parser().parse_args(
        cli_benchmark.join_extra_train_args(["--extra-train-args", "--no-single-pass"]))
    assert args.extra_train_args == "--no-single-pass"
