"""The frozen teacher of label-distribution training (``--method ldt``): loading, its own preprocessing, its classes
mapped onto the student's, and its identity (digest) for the run's records and ``--resume``.

EfficientFace (Zhao et al., AAAI'21; ``zengqunzhao/EfficientFace``, read for the facts, not copied) trains its student
on the class distribution of a frozen ResNet-50 (its "LDG"): ``main.py:59-63`` builds and loads it,
``main.py:171`` puts it in eval mode, and ``main.py:184-186`` runs it without gradient on the *same* normalised batch
the student sees (both networks share the loader's ``RandomResizedCrop(224)`` + flip + RAF-DB normalisation,
``main.py:96-103``) and turns its logits into ``softmax`` probabilities.

fer-mek's teacher may be any fer-mek model folder, transformers image-classification folder or Hub id, with its own
input size and normalisation. :meth:`Teacher.preprocess` takes the student's augmented, normalised batch, undoes the
student's normalisation, resizes to the teacher's size (bilinear, antialiased) and normalises with the teacher's
mean and std - and when size, mean and std are equal it hands the student's tensor through untouched, so the
EfficientFace setting (one normalisation for both) is exact.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BY_NAME", "Teacher", "check_teacher", "label_map_indices", "load_teacher", "parse_label_map",
           "weights_digest"]

#: ``--teacher-label-map by-name``: the teacher's classes reordered by name.
BY_NAME = "by-name"
#: The weight files a model folder may hold (their digest identifies the teacher).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: What is fetched of a Hub teacher: configs, processor and weights (never code: no trust_remote_code).
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.bin"]


# ----------------------------------------------------------------------------------------------- label maps
def parse_label_map(text: str) -> str | list[tuple[str, str]]:
    """``--teacher-label-map``: ``""`` (same names, same order), ``"by-name"``, or ``[(teacher_name, student_name),
    ...]`` from ``"t=s,t2=s2"``.

    Raises:
        ValueError: a malformed pair list (naming the option and the bad item).
    """
    text = (text or "").strip()
    if text in ("", BY_NAME):
        return text
    pairs = []
    for item in text.split(","):
        teacher, sep, student = item.partition("=")
        if not sep or not teacher.strip() or not student.strip():
            raise ValueError(f"--teacher-label-map: {item.strip()!r} is not a teacher_name=student_name pair; give "
                             f"'{BY_NAME}' or pairs such as 'happiness=happy,anger=angry,...' (one per student class)")
        pairs.append((teacher.strip(), student.strip()))
    return pairs


def label_map_indices(teacher_names: Sequence[str], student_names: Sequence[str], label_map: str = ""
                      ) -> list[int] | None:
    """For each student class (in the student's order) the index of the teacher's logit that stands for it, or
    ``None`` when the two label sets are the same names in the same order (nothing to permute).

    Teacher classes that no student class maps to are left out: the teacher's distribution is then its softmax over
    the student's classes only (renormalised over them).

    Raises:
        ValueError: the names differ and no map is given (both lists are shown); a student class the map does not
            cover; a name of the map that is not among the teacher's / student's classes; a class mapped twice.
    """
    teacher_names, student_names = [str(n) for n in teacher_names], [str(n) for n in student_names]
    parsed = parse_label_map(label_map)
    if parsed == "":
        if teacher_names == student_names:
            return None
        raise ValueError(
            f"the teacher's classes {teacher_names} are not the student's {student_names} (same names in the same "
            f"order); pass --teacher-label-map {BY_NAME} to match them by name, or explicit pairs "
            "--teacher-label-map 'teacher_name=student_name,...'")
    if parsed == BY_NAME:
        exact = {name: i for i, name in enumerate(teacher_names)}
        folded: dict[str, list[int]] = {}
        for i, name in enumerate(teacher_names):
            folded.setdefault(name.lower(), []).append(i)
        indices, missing = [], []
        for name in student_names:
            if name in exact:
                indices.append(exact[name])
            elif len(folded.get(name.lower(), [])) == 1:
                indices.append(folded[name.lower()][0])
            else:
                missing.append(name)
        if missing:
            raise ValueError(
                f"--teacher-label-map {BY_NAME}: the teacher has no class named {missing} (its classes: "
                f"{teacher_names}; the student's: {student_names}); map them with explicit pairs "
                "--teacher-label-map 'teacher_name=student_name,...'")
    else:
        mapping: dict[str, int] = {}
        for teacher, student in parsed:
            if teacher not in teacher_names:
                raise ValueError(f"--teacher-label-map: {teacher!r} is not a class of the teacher ({teacher_names})")
            if student not in student_names:
                raise ValueError(f"--teacher-label-map: {student!r} is not a class of the student ({student_names})")
            if student in mapping:
                raise ValueError(f"--teacher-label-map: the student class {student!r} is mapped twice")
            mapping[student] = teacher_names.index(teacher)
        missing = [name for name in student_names if name not in mapping]
        if missing:
            raise ValueError(f"--teacher-label-map: no teacher class is given for the student class(es) {missing}; "
                             "give one teacher_name=student_name pair per student class")
        indices = [mapping[name] for name in student_names]
    if len(set(indices)) != len(indices):
        raise ValueError(f"--teacher-label-map {label_map!r}: one teacher class stands for two student classes")
    return None if indices == list(range(len(teacher_names))) else indices


# ----------------------------------------------------------------------------------------------- identity
def weights_digest(folder: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a model folder's weight file(s) (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``): the
    file's own sha256 when there is one, else the sha256 of the ``name sha256`` lines of all, sorted by name.

    Raises:
        ValueError: the folder holds no weight file.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise ValueError(f"--teacher {folder}: no weight file ({', '.join(_WEIGHT_SUFFIXES)}) in the folder")
    from ..published import file_sha256

    digests = [(path.name, file_sha256(path)) for path in files]
    if len(digests) == 1:
        return f"sha256:{digests[0][1]}"
    return "sha256:" + hashlib.sha256("".join(f"{n} {d}\n" for n, d in digests).encode()).hexdigest()


def check_teacher(source: str, revision: str = "") -> None:
    """Check ``--teacher`` before anything loads: a local folder must exist and hold a ``config.json`` (a Hub id is
    checked when it is loaded); ``--teacher-revision`` needs a Hub id."""
    from ..locations import ModelLoadError, locate_model

    try:
        located = locate_model(source)
    except ModelLoadError as error:
        raise ModelLoadError(f"--teacher {error}") from None
    if revision and Path(located).is_dir():
        raise ValueError(f"--teacher-revision {revision!r} selects a revision of a Hub teacher, but --teacher "
                         f"{source} is a local folder; drop --teacher-revision")


def _resolve(source: str, revision: str) -> tuple[Path, str | None]:
    """The local folder of ``source`` and, for a Hub id, the commit it resolved to (from the Hub, or offline from
    its cache)."""
    from ..locations import locate_model

    located = locate_model(source)
    if Path(located).is_dir():
        return Path(located), None
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(located, revision=revision or None, allow_patterns=_HUB_PATTERNS))
    except Exception as error:  # noqa: BLE001 - one line naming the option, whatever the Hub client says
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--teacher {source}" + (f" --teacher-revision {revision}" if revision else "")
                         + f": cannot get the model from the Hub or its cache ({reason[:300]})") from None
    return folder, folder.name  # the snapshot folder is named by its commit


# ----------------------------------------------------------------------------------------------- the teacher
def _frozen_train(module: nn.Module, mode: bool = True) -> nn.Module:
    """The teacher's ``train()``: it stays in eval mode whatever is asked (BatchNorm / dropout of a frozen teacher)."""
    return nn.Module.train(module, False)


class Teacher:
    """A frozen classifier whose softmax is the student's target distribution.

    Not an ``nn.Module`` of the student: never wrapped by accelerate / DDP, never in the optimizer, never saved
    with the student. Its parameters do not require gradients, it stays in eval mode (its ``train()`` keeps eval;
    :meth:`logits` puts back eval should a submodule have been switched), and it runs under ``torch.no_grad``.

    Attributes:
        model: The teacher network.
        source, revision, commit, digest, kind: Where it came from (``kind``: ``fer-mek`` or ``transformers``).
        label_names: The teacher's class names (its ``id2label`` order).
        label_map: ``--teacher-label-map`` as given; ``indices`` its result (``None``: the same classes and order).
        settings: The teacher's input ``height``, ``width``, ``mean``, ``std``, ``normalize``; ``student_settings`` the
            student's.
    """

    def __init__(self, model: nn.Module, settings: dict[str, Any], student_settings: dict[str, Any],
                 label_names: Sequence[str], student_names: Sequence[str], label_map: str = "", *,
                 source: str = "", revision: str = "", commit: str | None = None, digest: str = "",
                 kind: str = "transformers") -> None:
        self.model = model
        self.model.requires_grad_(False)
        self.model.train = _frozen_train.__get__(self.model)  # type: ignore[method-assign]
        self.model.eval()
        self.settings, self.student_settings = dict(settings), dict(student_settings)
        self.label_names, self.label_map = [str(n) for n in label_names], label_map or ""
        self.indices = label_map_indices(self.label_names, student_names, self.label_map)
        self._index: torch.Tensor | None = None
        self.source, self.revision, self.commit, self.digest, self.kind = source, revision, commit, digest, kind
        keys = ("height", "width", "mean", "std", "normalize")
        self.identity = all(self.settings[k] == self.student_settings[k] for k in keys)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None) -> Teacher:
        self.model.to(device)
        if memory_format is not None:
            self.model.to(memory_format=memory_format)
        return self

    def preprocess(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The teacher's input from the student's normalised batch ``[B, 3, H, W]``: the same tensor when size, mean,
        std and normalisation are equal; else un-normalised with the student's mean / std, resized to the teacher's
        size (bilinear, antialiased) if it differs, normalised with the teacher's mean / std."""
        if self.identity:
            return pixel_values
        s, t = self.student_settings, self.settings
        x = pixel_values.float()
        shape = (1, 3, 1, 1)
        if s["normalize"]:
            x = x * torch.tensor(s["std"], device=x.device).view(shape) + torch.tensor(s["mean"], device=x.device).view(shape)
        if (x.shape[-2], x.shape[-1]) != (t["height"], t["width"]):
            x = F.interpolate(x, size=(t["height"], t["width"]), mode="bilinear", align_corners=False, antialias=True)
        if t["normalize"]:
            x = (x - torch.tensor(t["mean"], device=x.device).view(shape)) / torch.tensor(t["std"], device=x.device).view(shape)
        if pixel_values.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def logits(self, pixel_values: torch.Tensor, autocast: Callable[[], Any] | None = None) -> torch.Tensor:
        """The teacher's logits on the student's batch, in the student's class order (float32; no gradient).

        Args:
            pixel_values: The student's normalised batch.
            autocast: The run's autocast context factory (``accelerator.autocast``), so the teacher runs in the
                run's precision; ``None``: as is.
        """
        if any(m.training for m in self.model.modules()):
            nn.Module.train(self.model, False)  # someone switched a submodule to training: back to eval
        inputs = self.preprocess(pixel_values)
        with autocast() if autocast is not None else nullcontext():
            logits = self.model(pixel_values=inputs).logits
        logits = logits.float()
        if self.indices is not None:
            if self._index is None or self._index.device != logits.device:
                self._index = torch.tensor(self.indices, dtype=torch.long, device=logits.device)
            logits = logits.index_select(1, self._index)
        return logits

    def record(self) -> dict[str, Any]:
        """Where the teacher came from and how its outputs are used (``results.json``'s ``teacher`` less the loss
        options, which :func:`fer_mek.train.distill.teacher_record` adds)."""
        return {
            "model": self.source,
            "revision": self.revision or None,
            "commit": self.commit,
            "digest": self.digest,
            "kind": self.kind,
            "label_names": self.label_names,
            "label_map": self.label_map,
            "image_size": [self.settings["height"], self.settings["width"]],
            "image_mean": self.settings["mean"],
            "image_std": self.settings["std"],
            "preprocessing": "the student's tensor" if self.identity else "its own (un-normalise, resize, normalise)",
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def describe(self) -> str:
        """One line for the start banner."""
        where = self.source + (f"@{self.revision}" if self.revision else "")
        commit = f", commit {self.commit[:12]}" if self.commit else ""
        size = f"{self.settings['height']}x{self.settings['width']}px"
        inputs = ("the student's inputs as they are" if self.identity
                  else f"its own preprocessing ({size}, mean {self.settings['mean']}, std {self.settings['std']})")
        if self.indices is None:
            classes = "same classes"
        else:
            classes = f"classes mapped {self.label_map or BY_NAME} ({', '.join(self.label_names[i] for i in self.indices)})"
        return (f"teacher: {where} ({self.kind}, {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M "
                f"parameters, {self.digest[:19]}{commit}), frozen, eval mode, {inputs}, {classes}")


def _read_model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def load_teacher(source: str, student_processor: Any, student_names: Sequence[str], *, revision: str = "",
                 label_map: str = "") -> Teacher:
    """Load ``--teacher``: a fer-mek folder (:class:`~fer_mek.MEKForImageClassification` and its
    :class:`~fer_mek.MEKImageProcessor`), a transformers image-classification folder or a Hub id
    (``AutoModelForImageClassification`` / ``AutoImageProcessor``; no remote code is run), frozen, in eval mode, on
    the CPU (move it with :meth:`Teacher.to`).

    Args:
        source: The folder or Hub id.
        student_processor: The student's image processor (its size and normalisation are undone for the teacher).
        student_names: The student's class names, in its order.
        revision: Hub revision of a Hub id.
        label_map: ``--teacher-label-map``.

    Raises:
        ValueError: the teacher cannot be found or loaded, or its classes do not fit the student's (the message says
            which option to change).
    """
    from ..configuration_mek import MEKConfig
    from ..data.transforms import processor_settings

    folder, commit = _resolve(source, revision)
    fer_mek = _read_model_type(folder) == MEKConfig.model_type
    try:
        if fer_mek:
            from .. import MEKForImageClassification, MEKImageProcessor

            model = MEKForImageClassification.from_pretrained(folder)
            processor = MEKImageProcessor.from_pretrained(folder)
        else:
            from transformers import AutoImageProcessor, AutoModelForImageClassification

            model = AutoModelForImageClassification.from_pretrained(folder)
            processor = AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--teacher {source}: cannot load it as an image-classification model with its image "
                         f"processor ({reason[:300]})") from None
    model = model.float()
    config = model.config
    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    return Teacher(model, processor_settings(processor), processor_settings(student_processor), names,
                   student_names, label_map, source=source, revision=revision, commit=commit,
                   digest=weights_digest(folder), kind="fer-mek" if fer_mek else "transformers")
