"""The published MEK ResNet checkpoints (``ToiTenBao/fer-mek-checkpoints``) and the Hub references that name them.

What the source says about each published file, with the file:line it says it at
(``frichickens/MEK-CV`` @ ``3fb255f``, :data:`MEKCV_COMMIT`), in :data:`PUBLISHED_CHECKPOINTS`:

* ``labels`` / ``config``: its class order and the :class:`~fer_mek.MEKConfig` settings it was trained with;
* ``serving``: how the source serves it (``demo.py``), as :class:`~fer_mek.MEKImageProcessor` settings
  (:data:`SERVING_SETTINGS`);
* ``reported``: the test numbers the source publishes for it (never verified here);
* ``training``: the rest of its recipe, for the record (``conversion.json``).

And the Hub side: a reference ``REPO_ID/FILENAME[@REVISION]`` (:func:`parse_hub_reference`), downloaded with
``huggingface_hub.hf_hub_download`` (its cache, revision pinning, offline from the cache) by
:func:`download_checkpoint`; :func:`list_checkpoints` lists a repository's ``.pth`` files (from the cache when
offline); :func:`conversion_record` is the ``conversion.json`` of a converted file. The conversion itself is
:func:`fer_mek.convert.from_published`. huggingface_hub is imported only when the Hub is used.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_mek_cli.convert import PUBLISHED_REPO  # the published checkpoints' Hub repository (one place)

from .image_processing_mek import SERVING_DEFAULTS
from .labels import LABEL_SETS

__all__ = [
    "MEKCV_COMMIT",
    "MEKCV_FER2013_TRAIN_COUNTS",
    "MEKCV_RAFDB_TRAIN_COUNTS",
    "MEKCV_SERVING",
    "PUBLISHED_CHECKPOINTS",
    "PUBLISHED_REPO",
    "SERVING_DEFAULTS",
    "SERVING_SETTINGS",
    "CONVERSION",
    "CONVERSION_SCHEMA_VERSION",
    "CheckpointNotFoundError",
    "Downloaded",
    "HubReference",
    "conversion_record",
    "download_checkpoint",
    "file_sha256",
    "infer_label_set",
    "list_checkpoints",
    "parse_hub_reference",
    "published_checkpoint",
    "resolve_checkpoint",
    "serving_settings",
    "write_conversion",
]

#: Beside the weights of a converted checkpoint: where they come from, the numbers their source reports, their training
#: and serving settings (:func:`write_conversion`; read with :func:`fer_mek.runs.read_conversion`).
CONVERSION = "conversion.json"
#: Version of the ``conversion.json`` layout written by :func:`write_conversion`.
CONVERSION_SCHEMA_VERSION = 1
#: The MEK-CV commit every file:line below refers to.
MEKCV_COMMIT = "frichickens/MEK-CV@3fb255f079b71b128d8bed1cfabd0c9ccd388010"

#: Class counts of the 90 % train part that MEK-CV's scripts trained on (``np.random.seed(42)``; first 10 % of
#: ``np.random.permutation`` held out): RAF-DB (12,271 train images) and FER-2013's image-folder release (28,709; the
#: public ``msambare/fer2013`` folder counts, which MEK-CV's code does not state). They give the mean-1 balance weights
#: the published checkpoints were trained with.
MEKCV_RAFDB_TRAIN_COUNTS = (1157, 254, 651, 4311, 1762, 627, 2282)
MEKCV_FER2013_TRAIN_COUNTS = (3635, 394, 3664, 6419, 4479, 4359, 2889)

# ------------------------------------------------------------------------------------------------ serving settings
#: The serving settings of :class:`~fer_mek.MEKImageProcessor` (``preprocessor_config.json``), in the order of their
#: defaults (:data:`~fer_mek.image_processing_mek.SERVING_DEFAULTS`: fer-mek's own behaviour).
SERVING_SETTINGS: tuple[str, ...] = tuple(SERVING_DEFAULTS)

#: How MEK-CV's ``demo.py`` serves every checkpoint (its only serving code):
#:
#: * ``default_tta="flip"``: softmax averaged over the input and its mirror, always (``demo.py:188-199``);
#: * ``do_clahe``: the "CLAHE" checkbox is on by default (``demo.py:260``): CLAHE on the L channel of OpenCV's
#:   RGB->LAB, ``clipLimit=2.0``, ``tileGridSize=(8, 8)``, back to RGB (``demo.py:140-152``), applied to the face crop
#:   after detection and before the grey-scale conversion and the resize (``demo.py:179-186``);
#: * the face crop (checkbox on by default, ``demo.py:259``): the largest OpenCV Haar-cascade box
#:   (``haarcascade_frontalface_default``, ``scaleFactor=1.1, minNeighbors=5, minSize=(48, 48)``) grown by
#:   ``m = int(0.2 * max(w, h))`` on every side, clipped to the image (Haar boxes are square, so the crop is square
#:   unless clipped; ``face_square`` squares fer-mek's MTCNN boxes to match),
#:   no rotation; the whole image when no face is found (``demo.py:116-137``).
MEKCV_SERVING: dict[str, Any] = {
    "do_grayscale": False,
    "do_clahe": True,
    "clahe_clip_limit": 2.0,
    "clahe_tile_grid_size": 8,
    "face_margin": 0.2,
    # True although the demo's code does not square its box: OpenCV's Haar cascade returns square boxes, so the
    # source's crops are square (but where clipped at the image edge); fer-mek's MTCNN boxes are taller than wide,
    # and squaring them gives the crops the checkpoints were served, not stretched ones.
    "face_square": True,
    "face_clip": True,
    "face_align": False,
    "default_tta": "flip",
}
# FER-2013 was trained on grey images (ImageFolder replicates them to 3 channels): the demo turns every input grey,
# PIL convert("L").convert("RGB"), after CLAHE (demo.py:182-185).
_MEKCV_SERVING_FER = {**MEKCV_SERVING, "do_grayscale": True}
_SERVING_WHERE = (f"{MEKCV_COMMIT} demo.py:116-137 (face crop), 140-152 (CLAHE), 179-186 (order: crop, CLAHE, grey for "
                  "FER-2013, resize), 188-199 (flip TTA), 259-260 (face crop and CLAHE on by default)")
_SERVING_NOTES = (
    "MEK-CV detects faces with OpenCV's Haar cascade (largest box; scaleFactor 1.1, minNeighbors 5, minSize 48) and "
    "truncates the margin to whole pixels; fer-mek's detector applies the same geometry to its own face box."
)

# ------------------------------------------------------------------------------------------------ reported numbers
_RAF_TEST = {"dataset": "RAF-DB", "num_test_images": 3068,
             "split": "RAF-DB official test set (the test/ folder of the shuvoalok/raf-db-dataset ImageFolder release, "
                      "3,068 aligned faces), one view per image",
             "measured_with": {"face_crop": False, "clahe": False, "grayscale": False, "tta": "none"}}
_FER_TEST = {"dataset": "FER-2013", "num_test_images": 7178,
             "split": "FER-2013 image-folder release test/ (msambare/fer2013: PublicTest + PrivateTest, 7,178 grey 48x48 "
                      "images read as RGB; fer-mek: --fer2013-test PublicTest+PrivateTest), one view per image",
             "measured_with": {"face_crop": False, "clahe": False, "grayscale": False, "tta": "none"}}
_WEBCAM_TEST = {**_RAF_TEST,
                "split": "RAF-DB official test set (3,068 images) after the training-time Haar face crop (20 % margin, "
                         "whole image where no face is found) and CLAHE, one view per image",
                "measured_with": {"face_crop": True, "clahe": True, "grayscale": False, "tta": "none"}}


def _reported(test: Mapping[str, Any], accuracy: float, mean_class: float, where: str) -> dict[str, Any]:
    return {"accuracy": accuracy, "mean_class_accuracy": mean_class, **test,
            "where": f"{MEKCV_COMMIT} {where}", "verified": False}


# The README of ToiTenBao/fer-mek-checkpoints is the card written by MEK-CV's scripts/push_to_hf.py (:65-118), its
# table the CHECKPOINTS rows (:22-48); the results report has the same numbers with their run.
_PUSH = "scripts/push_to_hf.py:{} (the ToiTenBao/fer-mek-checkpoints README table); results-CV-project.md:{}"

# ------------------------------------------------------------------------------------------------ training recipes
_MEKCV = {"balance_weight_rule": "mean1", "head_init": "pytorch"}
_RAF = {"labels": "rafdb", "config": {**_MEKCV, "class_counts": MEKCV_RAFDB_TRAIN_COUNTS}}
_FER = {"labels": "fer2013-folders", "config": {**_MEKCV, "class_counts": MEKCV_FER2013_TRAIN_COUNTS}}
_COMMON_TRAINING = {
    "balance_weight_rule": "mean1: inverse class frequency of the 90 % train part, normalised to mean 1",
    "optimizer": "Adam, weight decay 1e-4", "early_stop_patience": 25, "image_size": 224,
    "selection": "best validation accuracy (10 % split: np.random.seed(42) permutation)",
}
_IMAGENET = "torchvision ImageNet weights (IMAGENET1K_V1)"
_MSCELEB = "MS-Celeb-1M face-recognition ResNet-18 (resnet18_msceleb.pth, the RUL repository's)"


def _training(script: str, run: str, epsilon: float, lam: float, dropout: float, init: str, lr: float, epochs: int,
              where: str, **extra: Any) -> dict[str, Any]:
    return {"epsilon": epsilon, "lambda": lam, "dropout": dropout, "init": init, "learning_rate": lr,
            "lr_schedule": "ExponentialLR gamma 0.9, per epoch", "epochs": epochs, **_COMMON_TRAINING,
            "script": script, "run": run, **extra, "where": f"{MEKCV_COMMIT} {where}"}


def _entry(base: Mapping[str, Any], smoothing: float, attention_weight: float, dropout: float, serving: Mapping[str, Any],
           reported: Mapping[str, Any] | None, training: Mapping[str, Any]) -> dict[str, Any]:
    entry = {**base, "config": {**base["config"], "smoothing": smoothing, "attention_weight": attention_weight,
                                "dropout": dropout}, "serving": dict(serving), "training": dict(training)}
    if reported is not None:
        entry["reported"] = dict(reported)
    return entry


_MC, _R18, _R34 = "kaggle/mek_resnet18_MS-Celeb-1M.py", "kaggle/mek_resnet18.py", "kaggle/mek_resnet34.py"
_WEBCAM = "kaggle/mek_webcam_resnet18_clahe_facecrop.py"

#: The published MEK ResNet checkpoints (``ToiTenBao/fer-mek-checkpoints``, file names of MEK-CV's
#: ``scripts/push_to_hf.py``): their class order, the MEKConfig settings they were trained with (from the MEK-CV
#: script that trained each: smoothing = ``LABEL_SMOOTH``, attention_weight = ``FLIP_LOSS_WEIGHT``, dropout =
#: ``ARCH_DROPOUT``, mean-1 balance weights ``_inv * (K / _inv.sum())``, heads with PyTorch's default init), their
#: serving settings, the numbers the source reports and the rest of their recipe, each with its file:line.
PUBLISHED_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "mek_resnet18_rafdb_msceleb_best.pth": _entry(
        _RAF, 0.1, 2.0, 0.4, MEKCV_SERVING, _reported(_RAF_TEST, 0.8641, 0.8137, _PUSH.format(27, 266)),
        _training(_MC, "rafdb-mek-rn18-msceleb-lr3e4", 0.1, 2.0, 0.4, _MSCELEB, 3e-4, 60,
                  f"{_MC}:46-47,81,110,123-124,131,388-389; kaggle/tuning/prep_msceleb.py:109 (LR=3e-4)")),
    "mek_resnet18_rafdb_imagenet_best.pth": _entry(
        _RAF, 0.1, 2.0, 0.4, MEKCV_SERVING, _reported(_RAF_TEST, 0.8585, 0.7910, _PUSH.format(31, 126)),
        _training(_R18, "mek-rn18-lr3e4-mc", 0.1, 2.0, 0.4, _IMAGENET, 3e-4, 60,
                  f"{_R18}:60,63,94-97,114,298-299; results-CV-project.md:126", epochs_run=60)),
    "mek_resnet34_rafdb_imagenet_best.pth": _entry(
        _RAF, 0.2, 2.0, 0.45, MEKCV_SERVING, _reported(_RAF_TEST, 0.8657, 0.7892, _PUSH.format(35, 132)),
        _training(_R34, "mek-rn34-rafdb-lr2e4-eps2", 0.2, 2.0, 0.45, _IMAGENET, 2e-4, 60,
                  f"{_R34}:59,62,93-96,113,297-298; results-CV-project.md:132", epochs_run=60)),
    "mek_resnet18_fer2013_imagenet_best.pth": _entry(
        _FER, 0.1, 0.25, 0.4, _MEKCV_SERVING_FER, _reported(_FER_TEST, 0.7081, 0.6928, _PUSH.format(43, 189)),
        _training(_R18, "fer2013-mek-resnet18-lr1e4-l025", 0.1, 0.25, 0.4, _IMAGENET, 1e-4, 80,
                  f"{_R18}:60,63,78-81,114,298-299; kaggle/tuning/prep_fine.py:27; kaggle/tuning/campaign_summary.csv:2",
                  epochs_run=51, best_epoch=26)),
    "mek_resnet34_fer2013_imagenet_best.pth": _entry(
        _FER, 0.1, 0.1, 0.45, _MEKCV_SERVING_FER, _reported(_FER_TEST, 0.7205, 0.6960, _PUSH.format(39, 196)),
        _training(_R34, "fer2013-mek-resnet34-lr1e4-l01", 0.1, 0.1, 0.45, _IMAGENET, 1e-4, 80,
                  f"{_R34}:59,62,77-80,113,297-298; kaggle/tuning/prep_fine.py:30; kaggle/tuning/campaign_summary.csv:5",
                  epochs_run=41, best_epoch=16)),
    # Trained and tested on Haar face crops + CLAHE (the demo's own preprocessing, _WEBCAM:154-222), EMA weights.
    "mek_webcam_resnet18_rafdb_clahe_facecrop_best.pth": _entry(
        _RAF, 0.15, 0.1, 0.4, MEKCV_SERVING, _reported(_WEBCAM_TEST, 0.8625, 0.8083, _PUSH.format(47, 345)),
        {**_training(_WEBCAM, "webcam-cf-ep80-g095", 0.15, 0.1, 0.4, _MSCELEB, 1e-4, 80,
                     f"{_WEBCAM}:55-56,90,100,112-115,122,124-126,154-222,473-474; results-CV-project.md:345,373"),
         "lr_schedule": "ExponentialLR gamma 0.95, per epoch", "ema_decay": 0.999,
         "train_preprocessing": "Haar face crop (20 % margin) then CLAHE, in training and evaluation"}),
}


def published_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The :data:`PUBLISHED_CHECKPOINTS` entry of a file name (``{"labels", "config", "serving", "training",
    "reported"?}``, copied), or None."""
    entry = PUBLISHED_CHECKPOINTS.get(Path(path).name.lower())
    if entry is None:
        return None
    return {key: dict(value) if isinstance(value, Mapping) else value for key, value in entry.items()}


def serving_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The serving settings the source uses for a published file name (:data:`SERVING_SETTINGS` keys); ``{}`` for
    another name (the processor's defaults then apply)."""
    entry = published_checkpoint(path)
    return dict(entry["serving"]) if entry else {}


def infer_label_set(path: str | os.PathLike) -> str:
    """The label set of a MEK ResNet checkpoint told by its file name: ``*fer2013*`` -> ``fer2013-folders`` (the
    published FER-2013 checkpoints' alphabetical folder order), ``*rafdb*`` -> ``rafdb``.

    Raises:
        ValueError: if the name says neither (or both): the class order must then be given (``--labels``).
    """
    name = Path(path).name.lower()
    found = {label_set for label_set, words in (("fer2013-folders", ("fer2013",)), ("rafdb", ("rafdb", "raf-db", "raf_db")))
             if any(word in name for word in words)}
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the class order of {Path(path).name!r} from its file name (it names "
            f"{'both RAF-DB and FER-2013' if found else 'neither rafdb nor fer2013'}); pass the label set: "
            f"--labels {' | '.join(sorted(LABEL_SETS))} (label_names= in Python)"
        )
    return found.pop()


# ------------------------------------------------------------------------------------------------ Hub references
class CheckpointNotFoundError(FileNotFoundError):
    """A Hub repository, revision or file that does not exist (or is not in the cache when offline); the message
    names what was asked and what exists."""


@dataclass(frozen=True)
class HubReference:
    """A file of a Hub model repository: ``REPO_ID/FILENAME[@REVISION]``."""

    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REFERENCE = re.compile(rf"(?:hf://)?(?P<repo>{_NAME}/{_NAME})/(?P<file>[^@\\]+?)(?:@(?P<rev>[^@\\]+))?")


def parse_hub_reference(text: str | os.PathLike, revision: str | None = None) -> HubReference | None:
    """``REPO_ID/FILENAME[@REVISION]`` (optionally ``hf://``-prefixed) as a :class:`HubReference`, or None when ``text``
    does not have that shape (an absolute or ``./`` path, fewer than three parts). ``revision`` applies when the text
    names none; naming two different ones is an error."""
    text = str(text)
    match = _REFERENCE.fullmatch(text)
    if match is None or text.startswith(("/", ".", "~")) or "//" in text.removeprefix("hf://"):
        return None
    named = match.group("rev")
    if named and revision and named != revision:
        raise ValueError(f"{text} names revision {named!r} but --revision is {revision!r}; give one")
    return HubReference(match.group("repo"), match.group("file"), named or revision)


@dataclass(frozen=True)
class Downloaded:
    """A checkpoint file fetched from the Hub (or its cache): where it is and what exactly it is."""

    path: Path
    reference: HubReference
    commit: str | None
    sha256: str

    def source(self) -> dict[str, Any]:
        """The ``source`` block of ``conversion.json``."""
        return {"repo_id": self.reference.repo_id, "filename": self.reference.filename,
                "revision": self.reference.revision or "main", "commit": self.commit, "sha256": self.sha256}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub_url(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def _offline_hint(cache_dir: str | os.PathLike | None) -> str:
    from huggingface_hub import constants

    where = cache_dir or constants.HF_HUB_CACHE
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
    return f"it is not in the Hub cache ({where}) and {why}; download it once online (the cache is then used)"


def download_checkpoint(
    reference: HubReference,
    *,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Downloaded:
    """Fetch a checkpoint with ``huggingface_hub.hf_hub_download``: its cache (``cache_dir``, default
    ``$HF_HUB_CACHE``), ``reference.revision`` (branch, tag or commit; default ``main``), offline from the cache with
    ``HF_HUB_OFFLINE=1`` or ``local_files_only``; ``endpoint`` defaults to ``$HF_ENDPOINT`` or the Hugging Face Hub.

    Raises:
        CheckpointNotFoundError: no such repository, revision or file (the message lists the repository's ``.pth``
            files when it exists), or not in the cache while offline.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = hf_hub_download(reference.repo_id, reference.filename, revision=reference.revision,
                               cache_dir=cache_dir, endpoint=endpoint, token=token, local_files_only=local_files_only)
    except RepositoryNotFoundError:
        hint = "" if reference.repo_id == PUBLISHED_REPO else f"; the published MEK checkpoints are in {PUBLISHED_REPO}"
        raise CheckpointNotFoundError(
            f"{reference}: there is no model repository {reference.repo_id!r} on {_hub_url(endpoint)} (or it is "
            f"private or gated and no token with access was given){hint}") from None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(
            f"{reference}: repository {reference.repo_id!r} has no revision {reference.revision!r} (a branch, tag "
            "or commit hash)") from None
    except LocalEntryNotFoundError:
        raise CheckpointNotFoundError(f"{reference}: {_offline_hint(cache_dir)}") from None
    except EntryNotFoundError:
        raise CheckpointNotFoundError(_missing_file_message(reference, cache_dir, endpoint, token)) from None
    snapshot = Path(path).parent
    while snapshot.parent.name != "snapshots" and snapshot != snapshot.parent:
        snapshot = snapshot.parent  # files in sub-folders of the repository
    commit = snapshot.name if snapshot.parent.name == "snapshots" else None
    return Downloaded(Path(path), reference, commit, file_sha256(path))


def resolve_checkpoint(
    text: str | os.PathLike,
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> tuple[Path, dict[str, Any] | None]:
    """The checkpoint file a command line names: a local file as it is, or a Hub file (``REPO_ID/FILENAME[@REVISION]``,
    or ``FILENAME`` of ``repo_id``) downloaded by :func:`download_checkpoint`.

    Returns:
        ``(path, source)``: ``source`` is the ``conversion.json`` source block of a Hub file, ``None`` for a local one.

    Raises:
        CheckpointNotFoundError: neither a local file nor a Hub file that exists.
    """
    if repo_id is None and Path(text).expanduser().is_file():
        return Path(text).expanduser(), None
    reference = HubReference(repo_id, str(text), revision) if repo_id else parse_hub_reference(text, revision)
    if reference is None:
        raise CheckpointNotFoundError(f"checkpoint file not found: {text} (a Hub file is REPO_ID/FILENAME[@REVISION])")
    try:
        downloaded = download_checkpoint(reference, cache_dir=cache_dir, endpoint=endpoint, token=token)
    except CheckpointNotFoundError as error:
        local = "" if repo_id or "no model repository" not in str(error) else f"; nor is {text} a local file"
        raise CheckpointNotFoundError(f"{error}{local}") from None
    return downloaded.path, downloaded.source()


def _missing_file_message(reference: HubReference, cache_dir: Any, endpoint: str | None, token: Any) -> str:
    revision = reference.revision or "main"
    message = f"{reference}: repository {reference.repo_id!r} has no file {reference.filename!r} at revision {revision!r}"
    try:
        found = list_checkpoints(reference.repo_id, reference.revision, cache_dir=cache_dir, endpoint=endpoint,
                                 token=token)
    except (OSError, ValueError) as error:
        return f"{message} (its files could not be listed: {error})"
    close = difflib.get_close_matches(reference.filename, found, n=1)
    return (f"{message}; its checkpoints (.pth): {', '.join(found) or 'none'}"
            + (f". Did you mean {close[0]!r}?" if close else ""))


def list_checkpoints(
    repo_id: str,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    suffix: str = ".pth",
) -> list[str]:
    """The ``suffix`` files of a Hub repository at ``revision`` (``HfApi.list_repo_files``), sorted. Offline
    (``HF_HUB_OFFLINE`` or no connection): the files of the revision's snapshot in the Hub cache.

    Raises:
        CheckpointNotFoundError: no such repository or revision, or (offline) nothing of it in the cache.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    try:
        if constants.HF_HUB_OFFLINE:
            raise OfflineModeIsEnabled("HF_HUB_OFFLINE is set")
        files = HfApi(endpoint=endpoint, token=token).list_repo_files(repo_id, revision=revision)
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(f"there is no model repository {repo_id!r} on {_hub_url(endpoint)} (or it is "
                                      "private or gated and no token with access was given)") from None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(f"repository {repo_id!r} has no revision {revision!r}") from None
    except Exception as error:  # offline, no connection, Hub error: the cache is the fallback
        files = _cached_files(repo_id, revision, cache_dir)
        if files is None:
            raise CheckpointNotFoundError(f"cannot list {repo_id}@{revision or 'main'}: {_offline_hint(cache_dir)} "
                                          f"({type(error).__name__})") from None
    return sorted(name for name in files if name.lower().endswith(suffix))


def _cached_files(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> list[str] | None:
    from huggingface_hub import constants

    folder = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    revision = revision or "main"
    ref = folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = folder / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    return [path.relative_to(snapshot).as_posix() for path in snapshot.rglob("*") if path.is_file()]


# ------------------------------------------------------------------------------------------------ conversion.json
def conversion_record(filename: str, source: Mapping[str, Any], serving: Mapping[str, Any]) -> dict[str, Any]:
    """The ``conversion.json`` of a converted MEK ResNet checkpoint (written by
    :func:`fer_mek.runs.write_conversion`).

    Args:
        filename: The checkpoint's file name (tells whether it is a published one).
        source: ``{"repo_id", "filename", "revision", "commit", "sha256"}`` (``repo_id``/``revision``/``commit``
            ``None`` for a local file).
        serving: The saved processor's serving settings (:data:`SERVING_SETTINGS`).

    Returns:
        ``{"source", "reported"?, "training"?, "serving", "serving_source"?}``: ``reported`` (the source's numbers,
        ``verified: false``) and ``training`` only for a published file name; ``reported`` is omitted when the source
        publishes no numbers.
    """
    entry = published_checkpoint(filename)
    record: dict[str, Any] = {"source": dict(source)}
    if entry and entry.get("reported"):
        record["reported"] = entry["reported"]
    if entry:
        record["training"] = entry["training"]
    record["serving"] = {key: serving.get(key, default) for key, default in SERVING_DEFAULTS.items()}
    if entry:
        record["serving_source"] = {"where": _SERVING_WHERE, "notes": _SERVING_NOTES}
    return record


def write_conversion(model_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``conversion.json`` into a converted model folder (atomically), stamped with
    :data:`CONVERSION_SCHEMA_VERSION` (also :func:`fer_mek.runs.write_conversion`).

    ``record`` (:func:`conversion_record`): ``source`` ``{"repo_id", "filename", "revision", "commit", "sha256"}``;
    ``reported`` (only where the source publishes numbers) ``{"accuracy", "mean_class_accuracy", "dataset", "split",
    "num_test_images", "measured_with", "where", "verified": false}``; ``training`` (published checkpoints)
    ``{"epsilon", "lambda", "dropout", "balance_weight_rule", "init", ..., "where"}``; ``serving``: the processor's
    serving settings; ``serving_source`` ``{"where", "notes"}``.

    Raises:
        ValueError: the record has no ``source`` mapping.
    """
    from .io import atomic_write_text

    if not isinstance(record.get("source"), Mapping):
        raise ValueError(f"a conversion record needs a source mapping, got {record.get('source')!r}")
    stamped = {"schema_version": CONVERSION_SCHEMA_VERSION, **record}
    return atomic_write_text(Path(model_dir) / CONVERSION, json.dumps(stamped, indent=2) + "\n")
