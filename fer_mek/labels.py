"""Class names of the facial-expression datasets fer-mek knows, in each dataset's own index order.

This module is the single place where expression names and their order are written down. Model configs carry
the names as ``id2label``; datasets carry them in a ``datasets.ClassLabel``; nothing else should hard-code them.

It must stay free of package-absolute imports: it is copied flat next to the model code for
``trust_remote_code=True`` loading.
"""

from __future__ import annotations

#: RAF-DB basic (Li et al., CVPR 2017): files label 1..7; index = label - 1. Also the order of MEK's reference code
#: and of the published MEK RAF-DB checkpoints.
RAFDB_LABELS: tuple[str, ...] = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")

#: FER-2013 (Goodfellow et al., 2013), ``emotion`` column of the original ``fer2013.csv``.
FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: FER-2013 as distributed in image folders (``train/<class>/``): the alphabetical order of the folder names.
#: The published MEK FER-2013 checkpoints use this order.
FER2013_FOLDER_LABELS: tuple[str, ...] = tuple(sorted(FER2013_LABELS))

#: EfficientFace (zengqunzhao/EfficientFace, Zhao et al., AAAI 2021): its RAF-DB image folders ``0``..``6``, read by
#: ``torchvision.datasets.ImageFolder`` (main.py:99-108) in that order; ``README.md:30``: "0: Neutral; 1: Happiness;
#: 2: Sadness; 3: Surprise; 4: Fear; 5: Disgust; 6: Anger". The order of its released 7-class models and of its LDG
#: teacher (``Pretrained_LDG.tar``).
EFFICIENTFACE_LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")

#: The class names a given label set is known by, for command-line options such as ``--labels rafdb``.
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "rafdb": RAFDB_LABELS,
    "fer2013": FER2013_LABELS,
    "fer2013-folders": FER2013_FOLDER_LABELS,
    "efficientface": EFFICIENTFACE_LABELS,
}


def get_label_set(name: str) -> tuple[str, ...]:
    """Return the class names of a known label set (``rafdb``, ``fer2013``, ``fer2013-folders``,
    ``efficientface``)."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}") from None
