"""Turn a data source into a saved ``DatasetDict`` plus a class-count summary: the logic of ``scripts/prepare_data.py``.

Moved from that script (now its thin entry point). :func:`main` loads any source of :data:`~fer_mek.data.SOURCES`,
writes ``save_to_disk`` output and ``fer_mek_summary.json``, and can push both to the Hub. Not imported by
``fer_mek.data`` itself: import ``fer_mek.data.prepare``. The options (:func:`build_parser`, :data:`DESCRIPTION`)
are those of :mod:`fer_mek_cli.prepare_data`, re-exported here: ``--help`` answers there without loading ``datasets``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fer_mek_cli.prepare_data import DESCRIPTION, build_parser

from ..io import WriteError, atomic_directory, check_writable, writing
from .common import TEXT_ENCODING, format_summary, not_utf8_error, summarize
from .sources import load_source

__all__ = ["DESCRIPTION", "SUMMARY_NAME", "build_parser", "main"]

#: The summary file written beside the saved dataset.
SUMMARY_NAME = "fer_mek_summary.json"


def _label_mapping(text: str | None) -> dict[str, str | None] | None:
    """``--label-mapping``: a JSON object, a path to a JSON file, or ``a=b,c=`` pairs (empty value = drop)."""
    if text is None:
        return None
    if Path(text).is_file():
        try:
            text = Path(text).read_text(encoding=TEXT_ENCODING)
        except UnicodeDecodeError as error:
            raise not_utf8_error(text, "--label-mapping file") from error
    if text.lstrip().startswith("{"):
        mapping = json.loads(text)
    else:
        mapping = {}
        for pair in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in pair:
                raise argparse.ArgumentTypeError(f"--label-mapping pair {pair!r} is not source=target")
            key, value = pair.split("=", 1)
            mapping[key.strip()] = value.strip() or None
    if not isinstance(mapping, dict):
        raise argparse.ArgumentTypeError("--label-mapping must be a JSON object {source: target or null}")
    return mapping


def _label_names(text: str | None) -> str | list[str] | None:
    """``--label-names``: a known label set (``rafdb``, ``fer2013``, ``fer2013-folders``) or a comma list."""
    if text is None:
        return None
    return [n.strip() for n in text.split(",")] if "," in text else text


def _prepare_output(output: Path, overwrite: bool, root: str | None) -> None:
    output = output.expanduser().resolve()
    if root is not None and Path(root).expanduser().resolve() == output:
        raise SystemExit(f"error: --output {output} is the --root being read; choose another output folder")
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise SystemExit(f"error: {output} exists and is not empty; pass --overwrite or choose another --output")
        if not (output / "dataset_dict.json").is_file():
            raise SystemExit(
                f"error: {output} does not hold a saved dataset; refusing to delete it, choose another --output"
            )
    check_writable(output.parent, "the folder of --output")  # before a long load, not after it


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _prepare(args)
    except (ValueError, WriteError) as err:  # DataError included: the message says what to fix
        print(f"error: {err}", file=sys.stderr)
        return 2


def _prepare(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "skip_bad": args.skip_bad,
        "val_split": args.val_split,
    }
    if args.source == "rafdb":
        options["image_dir"] = args.image_dir
    elif args.source == "fer2013":
        options["test_split"] = args.test_split
    elif args.source in ("folder", "hub"):
        options.update(
            label_names=_label_names(args.label_names),
            label_mapping=_label_mapping(args.label_mapping),
            test_fraction=args.test_fraction,
        )
        if args.source == "hub":
            options["test_split"] = args.test_split
    elif args.source == "synthetic":
        options.update(num_images=args.num_images, image_size=args.image_size, balanced=args.balanced or None)
    _prepare_output(args.output, args.overwrite, args.root)
    dataset_dict = load_source(args.source, args.root, **options)
    summary = summarize(dataset_dict)
    # Written beside --output and renamed into place when complete: a full disk or a kill leaves no half-written
    # dataset (and an overwritten one intact).
    with (
        writing(args.output, "the prepared dataset", intact=f"{args.output} is as it was before"),
        atomic_directory(args.output, overwrite=True) as staging,
    ):
        dataset_dict.save_to_disk(str(staging))
        (staging / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    summary_path = args.output / SUMMARY_NAME
    print(format_summary(summary))
    print(f"saved {args.source} to {args.output} (load with fer_mek.data.load_source('hub', {str(args.output)!r}))")
    print(f"summary: {summary_path}")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        dataset_dict.push_to_hub(args.push_to_hub, private=args.private)
        HfApi().upload_file(
            path_or_fileobj=str(summary_path),
            path_in_repo=SUMMARY_NAME,
            repo_id=args.push_to_hub,
            repo_type="dataset",
            commit_message="Add fer-mek data summary",
        )
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub} (private={args.private})")
    return 0
