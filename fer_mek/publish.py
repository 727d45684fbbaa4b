"""Publish a training run, or a converted checkpoint, as a Hugging Face Hub model repository: assemble, verify, upload.

A run folder written by the trainer (:mod:`fer_mek.runs` describes it) becomes a folder that anyone can load with
``AutoModelForImageClassification.from_pretrained(repo_id)`` (with ``fer_mek`` installed) or with
``trust_remote_code=True`` (without it)::

    model.safetensors, config.json (auto_map + id2label), preprocessor_config.json,
    configuration_mek.py, modeling_mek.py, image_processing_mek.py, losses.py, labels.py,
    README.md (the model card), confusion_matrix.png, training_curves.png, results.json

The code (``*.py``) is the installed package's own (:func:`fer_mek.modeling_mek.remote_code_files`), written fresh
into the folder: a run folder's copies are never uploaded, imported nor executed, and where they differ from the
package's, :func:`code_differences` says so. Every text file of the folder (card, ``results.json``,
``conversion.json``, ...) has its local paths reduced (:func:`fer_mek.local_paths.reduce_folder`): no data root, run
folder or home directory reaches the Hub.

A converted checkpoint (a ``save_pretrained`` folder with ``conversion.json``, written by fer-mek's converter from
weights trained elsewhere) has no training run and no ``results.json``: it is published with its ``conversion.json``
and a card that gives the figures its source reports, marked unverified (:mod:`fer_mek.model_card_converted`).

After timm's ``timm/models/_hub.py``: the card is built by the pure functions of :mod:`fer_mek.model_card` (and
:mod:`fer_mek.model_card_converted`), the folder is checked by :mod:`fer_mek.verify` (reloaded with the package and,
where ``fer_mek`` cannot be imported, with ``trust_remote_code=True``: its logits on a few validation images, or
generated faces for a folder without a run, must equal those of the run's checkpoint) before anything is written or
uploaded, and this module writes and uploads it. Upload is ``create_repo(exist_ok=True)`` and
one ``create_commit``. The token comes from huggingface_hub's usual sources (``HF_TOKEN``, ``hf auth login``); this
module never reads, prints or writes it.

Entry points: :func:`publish`, and :func:`main`, its command line (``scripts/push.py``), whose options
(:func:`build_parser`) are those of :mod:`fer_mek_cli.push`, re-exported here: ``--help`` answers there without
importing torch. Importing this module has no side effect.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fer_mek_cli.push import build_parser

from .io import WriteError, atomic_directory, check_writable, writing
from .local_paths import Root, reduce_folder, reduce_local_paths, roots_of
from .model_card import CardTemplateError, build_card, describe_dataset, format_metric
from .model_card_converted import (
    ConversionRecordError,
    build_converted_card,
    converted_dataset_facts,
    reported_figures,
)
from .runs import (
    BEST,
    CONFUSION_MATRIX,
    CONVERSION,
    LAST,
    MODEL_FILES,
    RESULTS,
    TRAINING_CURVES,
    Run,
    RunError,
    load_run,
    read_conversion,
)
from .verify import VerificationError, VerificationReport, verification_images, verify_folder

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from huggingface_hub import CommitInfo

__all__ = [
    "PublishError",
    "PublishResult",
    "assemble",
    "build_parser",
    "code_differences",
    "conversion_of",
    "local_roots",
    "main",
    "publish",
    "upload",
    "validate_repo_id",
    "write_package_code",
]

_Function = TypeVar("_Function", bound=Callable[..., Any])


class PublishError(Exception):
    """A run cannot be published as asked; the message says why and how to fix it."""


def _one_error(function: _Function) -> _Function:
    """Re-raise the errors of the stages (run folder, card template, verification, writing the folder) as
    :class:`PublishError`, with the same message and the stage's error as ``__cause__``: a caller of :func:`publish`
    catches one error type."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (RunError, CardTemplateError, ConversionRecordError, VerificationError) as error:
            raise PublishError(str(error)) from error
        except WriteError as error:
            raise PublishError(error.strerror or str(error)) from error

    return wrapper  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ repository id
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_repo_id(repo_id: str) -> str:
    """Check a ``USER/NAME`` (or ``ORG/NAME``) model id; returns it.

    Raises:
        PublishError: The id is not ``namespace/name`` or breaks the Hub's naming rules.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    example = "e.g. --repo-id alice/fer-mek-rafdb"
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise PublishError(f"--repo-id must be USER/NAME or ORG/NAME ({example}): letters, digits, '-', '_' and "
                           f"'.' on both sides of one '/', got {repo_id!r}")
    try:
        hub_validate(repo_id)
    except HFValidationError as error:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid Hub model id ({error}); {example}") from error
    return repo_id


# ------------------------------------------------------------------------------------------------------ assembly
def local_roots(run: Run) -> list[Root]:
    """The local folders a run's files may name, with the names they are published under: the run folder and the
    data roots its ``results.json`` records (:func:`fer_mek.local_paths.roots_of`)."""
    results = run.results or {}
    dataset, config = results.get("dataset") or {}, results.get("config") or {}
    pairs = [(run.path, None), (run.model_dir, None), (config.get("output_dir"), None),
             (dataset.get("root"), None), (config.get("data_root"), None)]
    options = run.data_options
    if options is not None:
        pairs.append((options.data_root, None))
    return roots_of((str(path) if path is not None else None, name) for path, name in pairs)


def write_package_code(folder: str | os.PathLike) -> list[str]:
    """Write the installed package's model code (:func:`fer_mek.modeling_mek.remote_code_files`) into ``folder``;
    returns the file names. This, never a run folder's copy, is the code that is verified and published."""
    from .modeling_mek import remote_code_files

    names = []
    for source in remote_code_files():
        (Path(folder) / source.name).write_bytes(source.read_bytes())
        names.append(source.name)
    return names


def code_differences(model_dir: str | os.PathLike) -> list[str]:
    """One line per ``*.py`` of a run's model folder that is not the installed package's code (changed, extra or
    missing); empty when they are the same. Nothing is imported: the files are compared as bytes."""
    from .modeling_mek import remote_code_files

    model_dir = Path(model_dir)
    package = {source.name: source for source in remote_code_files()}
    lines = []
    for path in sorted(model_dir.glob("*.py")):
        if path.name not in package:
            lines.append(f"{path}: not part of the installed fer_mek's model code; it is not uploaded")
        elif path.read_bytes() != package[path.name].read_bytes():
            lines.append(f"{path}: differs from the installed fer_mek's; the upload uses the package's")
    lines += [f"{model_dir / name}: missing; the upload uses the package's" for name in sorted(package)
              if not (model_dir / name).is_file()]
    return lines


def _run_hint(run_dir: str | os.PathLike) -> str:
    """`` (did you mean RUN?)`` for a ``--run`` that does not exist but resembles a run or model folder, else ``""``
    (:func:`fer_mek.locations.model_folder_hint`; a run's ``best``/``last`` folder is shown as the run itself)."""
    from .locations import model_folder_hint

    hint = model_folder_hint(Path(run_dir))
    if hint and Path(hint).name in (BEST, LAST) and (Path(hint).parent / RESULTS).is_file():
        hint = str(Path(hint).parent)
    return f" (did you mean {hint}?)" if hint else ""


def conversion_of(run: Run) -> dict[str, Any] | None:
    """The ``conversion.json`` of a converted checkpoint (a bare ``save_pretrained`` folder that holds one), else
    ``None`` (a training run, or a model folder of unknown origin).

    Raises:
        RunError: The file is unreadable or of a newer schema.
    """
    return read_conversion(run.model_dir) if run.checkpoint is None else None


def assemble(
    run: Run,
    folder: str | os.PathLike,
    repo_id: str,
    *,
    template: str | os.PathLike | None = None,
    revision: str | None = None,
    license: str | None = None,
) -> list[str]:
    """Write the folder to upload into ``folder`` (which must exist and be empty).

    The weights, ``config.json`` and ``preprocessor_config.json`` are copied unchanged from the run's checkpoint;
    the code (``*.py``) is the installed package's (:func:`write_package_code`), never the run folder's copy; the
    card, ``results.json`` and the figures are added when the run's results apply to these weights. A converted
    checkpoint (:func:`conversion_of`) gets its ``conversion.json`` and the card of
    :func:`fer_mek.model_card_converted.build_converted_card`. Last, every text file has its local paths reduced
    (:func:`local_roots`, :func:`fer_mek.local_paths.reduce_folder`).

    Returns:
        The relative paths written, sorted.

    Raises:
        CardTemplateError: The card template is missing or its markers are not the expected ones.
        ConversionRecordError: A converted checkpoint's ``conversion.json`` reports a figure that is not a fraction.
    """
    folder = Path(folder)
    roots = local_roots(run)
    names: list[str] = []
    for source in sorted(run.model_dir.iterdir()):
        is_weights = source.suffix == ".safetensors" or source.name == "model.safetensors.index.json"
        if source.is_file() and (is_weights or source.name in MODEL_FILES):
            shutil.copyfile(source, folder / source.name)
            names.append(source.name)
    names += write_package_code(folder)
    conversion = conversion_of(run)
    if conversion is not None:
        published = reduce_local_paths(conversion, roots)
        (folder / CONVERSION).write_text(json.dumps(published, indent=2, default=str) + "\n", encoding="utf-8")
        processor_config = json.loads((run.model_dir / "preprocessor_config.json").read_text(encoding="utf-8"))
        card = build_converted_card(published, run.config, repo_id, processor_config=processor_config,
                                    template=template, revision=revision, license=license)
        (folder / "README.md").write_text(str(card), encoding="utf-8")
        reduce_folder(folder, roots)
        return sorted([*names, CONVERSION, "README.md"])
    has_matrix = has_curves = False
    if run.test is not None:
        published = reduce_local_paths(json.loads((run.path / RESULTS).read_text(encoding="utf-8")), roots)
        (folder / RESULTS).write_text(json.dumps(published, indent=2, default=str) + "\n", encoding="utf-8")
        names.append(RESULTS)
        image = run.path / CONFUSION_MATRIX
        if image.is_file():
            shutil.copyfile(image, folder / CONFUSION_MATRIX)
        else:
            from .figures import plot_confusion_matrix

            plot_confusion_matrix(run.test["confusion_matrix"], run.label_names, folder / CONFUSION_MATRIX,
                                  title="test confusion matrix")
        names.append(CONFUSION_MATRIX)
        has_matrix = True
        curves = run.path / TRAINING_CURVES
        if curves.is_file():
            shutil.copyfile(curves, folder / TRAINING_CURVES)
            names.append(TRAINING_CURVES)
            has_curves = True
    card = build_card(run, repo_id, template=template, revision=revision, license=license,
                      has_confusion_matrix=has_matrix, has_training_curves=has_curves)
    (folder / "README.md").write_text(str(card), encoding="utf-8")
    names.append("README.md")
    reduce_folder(folder, roots)
    return sorted(names)


# ------------------------------------------------------------------------------------------------------- upload
def _check_can_upload() -> None:
    """Raise a :class:`PublishError` when an upload cannot work: offline mode, or no token anywhere."""
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise PublishError("HF_HUB_OFFLINE is set: uploading needs the network. Unset HF_HUB_OFFLINE (and "
                           "TRANSFORMERS_OFFLINE), or use --dry-run --output-dir DIR to write the folder only")
    if get_token() is None:
        raise PublishError("not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN to a token "
                           "with write access")


def _hub_error_hint(status: int | None, repo_id: str) -> str:
    return {
        401: "your token is missing, invalid or expired: run `hf auth login` or set HF_TOKEN to a token with write "
             "access",
        403: f"your token may not write to {repo_id}: use a write token (or a fine-grained token with write access "
             "to this repository or namespace), and a namespace you belong to",
        404: f"{repo_id} or its branch was not found: check --repo-id and --revision",
        409: "the repository changed during the upload: run the command again",
        412: "the repository changed during the upload: run the command again",
        413: "the upload is too large for a regular commit",
    }.get(status or 0, "check the message above, then run the command again")


def upload(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str,
    commit_description: str = "",
    private: bool = False,
    revision: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Create the repository if needed and upload ``folder`` as one commit.

    ``create_repo(exist_ok=True)``, ``create_branch(exist_ok=True)`` when ``revision`` is not ``main``, then one
    ``create_commit`` with every file of ``folder``: the Hub applies all files or none. The token comes from
    huggingface_hub (``HF_TOKEN``, ``hf auth login``); this function never reads it.

    Raises:
        PublishError: Offline mode, no token, an unreachable endpoint, or the Hub refused (with the reason and a hint).
    """
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    _check_can_upload()
    api = HfApi(endpoint=endpoint)
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    try:
        api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        return api.create_commit(repo_id, operations=operations, commit_message=commit_message,
                                 commit_description=commit_description, repo_type="model", revision=revision)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        raise PublishError(f"the Hub refused the upload to {repo_id}: {error}\nHow to fix: "
                           f"{_hub_error_hint(status, repo_id)}. Nothing was committed.") from error
    except OfflineModeIsEnabled as error:
        raise PublishError(f"{error}. Nothing was committed.") from error
    except ValueError as error:  # huggingface_hub: README metadata rejected by the Hub's YAML validation
        raise PublishError(f"the Hub rejected the upload to {repo_id}: {error}\nNothing was committed.") from error
    except httpx2.TransportError as error:  # the HTTP library of huggingface_hub: connection, timeout, TLS
        raise PublishError(f"cannot reach {api.endpoint} ({error}): check the network, proxies and HF_ENDPOINT. "
                           "Nothing was committed.") from error


# ------------------------------------------------------------------------------------------------------ publish
@dataclass
class PublishResult:
    """The outcome of :func:`publish`.

    Attributes:
        files: The files of the published folder.
        folder: Where the folder was written (``output_dir``), or ``None`` when it only existed temporarily.
        verification: What the verification checked.
        commit_url: The commit on the Hub, ``None`` for a dry run.
        repo_url: The model's page on the Hub, ``None`` for a dry run.
        code_notes: How the run folder's ``*.py`` differ from the package's code that was published instead
            (:func:`code_differences`); empty when they are the same.
    """

    files: list[str]
    folder: Path | None
    verification: VerificationReport
    commit_url: str | None = None
    repo_url: str | None = None
    code_notes: list[str] = field(default_factory=list)


def _source_reference(conversion: dict[str, Any]) -> str:
    """``REPO_ID/FILENAME[@REVISION]`` of a converted checkpoint's source, or its file name."""
    source = conversion.get("source") or {}
    name = str(source.get("filename") or "a checkpoint file")
    if source.get("repo_id"):
        revision = source.get("revision")
        return f"{source['repo_id']}/{name}" + (f"@{revision}" if revision and revision != "main" else "")
    return Path(name.replace("\\", "/")).name


def _default_commit_message(run: Run, conversion: dict[str, Any] | None = None) -> str:
    if conversion is not None:
        return f"Upload converted checkpoint {_source_reference(conversion)}"
    checkpoint = f" ({run.checkpoint} checkpoint)" if run.checkpoint else ""
    return f"Upload fer-mek run {run.name}{checkpoint}"


def _reported_line(run: Run, conversion: dict[str, Any]) -> str:
    """The commit description's line about a converted checkpoint's figures."""
    reported = reported_figures(conversion)
    if reported is None:
        return (f"Converted from {_source_reference(conversion)}; its source reports no test figures and fer-mek "
                "measured none.")
    facts = converted_dataset_facts(conversion, run.label_names)
    figures = ", ".join(f"{label} {format_metric(reported[key])}" for key, label in
                        (("accuracy", "accuracy"), ("mean_class_accuracy", "mean-class accuracy")) if key in reported)
    where = f" ({reported['where']})" if reported.get("where") else ""
    return (f"Converted from {_source_reference(conversion)}. Reported by the source, not measured by fer-mek "
            f"({facts.name} {facts.split}): {figures}{where}.")


def _commit_description(run: Run, report: VerificationReport, conversion: dict[str, Any] | None = None) -> str:
    facts = describe_dataset(run.results)
    lines = []
    if conversion is not None:
        lines.append(_reported_line(run, conversion))
    elif run.test is not None:
        what = "synthetic test split" if facts.synthetic else f"{facts.name} {facts.split}"
        test = {key: format_metric(run.test[key]) for key in ("accuracy", "mean_class_accuracy", "macro_f1")}
        lines.append(f"Test ({what}): accuracy {test['accuracy']}, mean-class accuracy "
                     f"{test['mean_class_accuracy']}, macro-F1 {test['macro_f1']}.")
    else:
        lines.append(f"No test results: {run.no_test_reason}.")
    lines.append(f"Verified before upload on {report.num_images} images ({report.images}): "
                 + "; ".join(report.checks) + ".")
    return "\n".join(lines)


@_one_error
def publish(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    checkpoint: str = BEST,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    allow_no_results: bool = False,
    commit_message: str | None = None,
    card_template: str | os.PathLike | None = None,
    license: str | None = None,
    verify_on: str = "auto",
    endpoint: str | None = None,
    echo: Callable[[str], None] = print,
) -> PublishResult:
    """Assemble, verify and (unless ``dry_run``) upload a training run.

    Args:
        run_dir: The run folder (the training's ``--output-dir``), a converted checkpoint (a ``save_pretrained``
            folder with ``conversion.json``) or a bare ``save_pretrained`` folder.
        repo_id: ``USER/NAME`` or ``ORG/NAME``.
        checkpoint: ``"best"`` or ``"last"``.
        private: Create the repository private (an existing repository keeps its visibility).
        revision: Branch to commit to (created from ``main`` if missing); default ``main``.
        dry_run: Write the folder (to ``output_dir``) and stop: no network.
        output_dir: Where to write the folder; required for a dry run, optional otherwise (a record of what was
            uploaded). Written atomically: complete or not at all.
        overwrite: Replace an existing non-empty ``output_dir``.
        allow_no_results: Publish weights without test results (the card then makes no accuracy claim). Not needed
            for a converted checkpoint whose ``conversion.json`` reports its source's figures.
        commit_message: Commit title; default names the run and checkpoint.
        card_template: The card template (a ``MODEL_CARD.md``); default the one packaged with fer-mek
            (:func:`fer_mek.model_card.default_card_template`).
        license: Licence identifier overriding the one derived from the dataset.
        verify_on: ``"auto"`` or ``"synthetic"`` (see :func:`fer_mek.verify.verification_images`).
        endpoint: Hub endpoint; default ``$HF_ENDPOINT`` or https://huggingface.co.
        echo: Where progress lines go.

    Raises:
        PublishError: Invalid arguments, an unusable run, missing test results without ``allow_no_results``, a bad
            card template, a failed verification or a refused upload. Nothing is left half-written. When a stage of
            its own raised the error (:class:`~fer_mek.runs.RunError`, :class:`~fer_mek.model_card.CardTemplateError`,
            :class:`~fer_mek.verify.VerificationError`), that error is the ``__cause__``, with the same message.
    """
    validate_repo_id(repo_id)
    if dry_run and output_dir is None:
        raise PublishError("--dry-run needs --output-dir DIR: the folder that would be uploaded is written there")
    if verify_on not in ("auto", "synthetic"):
        raise PublishError(f"verify_on must be 'auto' or 'synthetic', got {verify_on!r}")
    if revision is not None and not revision.strip():
        raise PublishError("--revision must name a branch, e.g. --revision main")
    try:
        run = load_run(run_dir, checkpoint)
    except RunError as error:
        if Path(run_dir).exists():
            raise
        raise RunError(f"{error}{_run_hint(run_dir)}") from error
    conversion = conversion_of(run)
    reported = reported_figures(conversion) if conversion is not None else None
    if run.test is None and reported is None and not allow_no_results:
        if conversion is not None:
            raise PublishError(f"{run.path / CONVERSION} reports no test figures of the source and fer-mek measured "
                               "none. A published model should come with its test results; pass --allow-no-results "
                               "to publish it without any accuracy claim")
        raise PublishError(f"{run.no_test_reason}. A published model should come with its test results; finish the "
                           "run's evaluation, or pass --allow-no-results to publish it without any accuracy claim")
    if output_dir is not None:
        target = Path(output_dir)
        resolved, run_path, model_path = target.resolve(), run.path.resolve(), run.model_dir.resolve()
        if resolved in (run_path, *run_path.parents) or resolved == model_path or model_path in resolved.parents:
            raise PublishError(f"--output-dir {target} would replace or sit inside the run's own files; choose a "
                               "folder outside the run, e.g. --output-dir hub-preview")
        if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
            raise PublishError(f"{target} already exists and is not empty; choose another --output-dir or pass "
                               "--overwrite")
        check_writable(target.parent, "the folder of --output-dir")
    if not dry_run:
        _check_can_upload()  # before the slow part: fail early when the upload cannot happen

    if conversion is not None:
        echo(f"converted checkpoint {run.path} (from {_source_reference(conversion)}): "
             + ("the figures its source reports (conversion.json; not measured by fer-mek)" if reported is not None
                else "no reported figures"))
    else:
        echo(f"run {run.path} ({run.checkpoint or 'model folder'}): "
             + ("test results apply" if run.test is not None else f"no test results ({run.no_test_reason})"))
    code_notes = code_differences(run.model_dir)
    for line in code_notes:
        echo(f"note: {line}")
    images, images_source = verification_images(run, source=verify_on)
    roots = local_roots(run)

    def build(staging: Path) -> tuple[list[str], VerificationReport]:
        files = assemble(run, staging, repo_id, template=card_template, revision=revision, license=license)
        echo(f"assembled {len(files)} files: {', '.join(files)}")
        echo(f"verifying on {len(images)} images ({images_source}) ...")
        report = verify_folder(staging, run, images, images_source)
        for line in report.checks:
            echo(f"  ok  {line}")
        return files, report

    def push(folder: Path, report: VerificationReport) -> CommitInfo:
        echo(f"uploading to {repo_id}" + (f" (branch {revision})" if revision and revision != "main" else "") + " ...")
        message = reduce_local_paths(commit_message or _default_commit_message(run, conversion), roots)
        return upload(folder, repo_id, commit_message=message,
                      commit_description=reduce_local_paths(_commit_description(run, report, conversion), roots),
                      private=private, revision=revision, endpoint=endpoint)

    untouched = "nothing was written or uploaded"
    if output_dir is not None:
        with writing(output_dir, "the folder to publish", untouched), \
                atomic_directory(output_dir, overwrite=overwrite) as staging:
            files, report = build(staging)
        folder = Path(output_dir)
        echo(f"wrote {folder}")
        if dry_run:
            echo(f"dry run: nothing was uploaded; this folder is what would be pushed to {repo_id}")
            return PublishResult(files=files, folder=folder, verification=report, code_notes=code_notes)
        info = push(folder, report)
    else:
        with writing(tempfile.gettempdir(), "a temporary folder in TMPDIR", untouched):
            scratch = tempfile.TemporaryDirectory(prefix="fer-mek-publish-")
        with scratch:
            staging = Path(scratch.name) / "model"
            with writing(staging, "the temporary folder to publish", untouched):
                staging.mkdir()
                files, report = build(staging)
            info = push(staging, report)
    echo(f"commit: {info.commit_url}")
    return PublishResult(files=files, folder=Path(output_dir) if output_dir is not None else None,
                         verification=report, commit_url=info.commit_url,
                         repo_url=str(info.repo_url) if getattr(info, "repo_url", None) else None,
                         code_notes=code_notes)


# ------------------------------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None, template: str | os.PathLike | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 1 when publishing was refused or failed).

    Args:
        argv: The arguments (default ``sys.argv[1:]``).
        template: The default card template (``scripts/push.py`` passes the repository's ``MODEL_CARD.md``); without
            it, the template packaged with fer-mek.
    """
    args = build_parser(template).parse_args(argv)
    try:
        publish(
            args.run,
            args.repo_id,
            checkpoint=args.checkpoint,
            private=args.private,
            revision=args.revision,
            dry_run=args.dry_run,
            output_dir=args.output_dir,
            overwrite=args.overwrite,
            allow_no_results=args.allow_no_results,
            commit_message=args.commit_message,
            card_template=args.card_template,
            license=args.license,
            verify_on=args.verify_on,
            endpoint=args.endpoint,
        )
    except (PublishError, OSError) as error:  # OSError: the output folder cannot be written, for instance
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
