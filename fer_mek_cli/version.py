"""The package's version: the one place it is written (``pyproject.toml`` reads it from here). Standard library only,
so that command-line parsers can show ``--version`` without importing the model stack."""

__version__ = "0.1.0"
