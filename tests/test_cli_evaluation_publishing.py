"""The light command lines of evaluation and publishing (:mod:`fer_mek_cli.evaluation`, ``prepare_data``, ``demo``,
``push``): the library modules use their parsers (one definition each), and push's default card template."""

from __future__ import annotations

from fer_mek_cli import demo as demo_cli
from fer_mek_cli import evaluation as evaluation_cli
from fer_mek_cli import prepare_data as prepare_cli
from fer_mek_cli import push as push_cli

from .conftest import REPO_ROOT


def test_the_library_modules_use_the_command_lines_parsers():
    from fer_mek import demo, evaluation, publish
    from fer_mek.data import prepare

    assert evaluation.build_parser is evaluation_cli.build_parser
    assert prepare.build_parser is prepare_cli.build_parser
    assert demo.build_parser is demo_cli.build_parser and demo.DEFAULT_MODEL is demo_cli.DEFAULT_MODEL
    assert publish.build_parser is push_cli.build_parser


def test_push_defaults_to_the_repositorys_card_template():
    template = push_cli.repository_card_template(REPO_ROOT / "scripts" / "push.py")
    assert template == REPO_ROOT / "MODEL_CARD.md" and template.is_file()
    assert push_cli.build_parser(template).parse_args(["--run", "r", "--repo-id", "a/b"]).card_template == str(template)
