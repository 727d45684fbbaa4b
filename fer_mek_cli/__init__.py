"""fer-mek's command lines, apart from the library so that they start fast.

Every entry point (``scripts/*.py``, the ``fer-mek`` command) is a module here with ``build_parser()`` and
``main(argv)``: the parser, its option types (:mod:`fer_mek_cli.arguments`), choices and defaults
(:mod:`fer_mek_cli.defaults`) and the version use the standard library (and PyYAML) only, so ``--help``,
``--version`` and a usage error answer without importing torch or transformers. ``main`` parses the command line
first and imports :mod:`fer_mek`, which registers the Auto classes and loads the model stack, only to run the command.

Why a package of its own: importing any ``fer_mek.*`` module runs ``fer_mek/__init__.py`` first, and that
registration needs torch and transformers (about 3 s on a 2-core CPU). The library imports its choices and defaults
from here, so each is written once. ``tests/test_cli_startup.py`` checks that no entry point's ``--help`` loads torch.
"""
