"""Facial-expression data for fer-mek: loaders, the leakage-free split, class statistics and MEK transforms.

Every loader returns a ``datasets.DatasetDict`` with ``train`` / ``validation`` / ``test``, an ``image`` column
(``datasets.Image``) and a ``label`` column (``datasets.ClassLabel`` with the dataset's own class names, from
:mod:`fer_mek.labels`). Validation is made from train by ``val_split`` (:data:`VAL_SPLITS`): a stratified
``val_fraction`` (the default; seeded, deterministic), MEK-CV's plain NumPy permutation (:func:`permutation_split`,
over the train images in torchvision ``ImageFolder`` order) or none (empty validation); the test split is never
used for it. :func:`get_metadata` returns how the data was built (source, ``val_fraction``, ``seed``,
skipped bad items), :func:`summarize` / :func:`format_summary` the per-split class counts.

Fast training path: :func:`cached_pixels` decodes and resizes each image once into a memory-mapped ``uint8``
array, :class:`CachedImages` serves whole batches of it, :class:`BatchAugmentation` augments them on the device
(:func:`batched_augmentation_supports` says which augmentation options it cannot run).

Sources: :func:`load_rafdb`, :func:`load_fer2013`, :func:`load_image_folder`, :func:`load_hub_dataset`,
:func:`load_synthetic` (the embedded default; :data:`SYNTHETIC_NUM_IMAGES` images of :data:`SYNTHETIC_IMAGE_SIZE`
pixels unless told otherwise), or :func:`load_source` by name. :func:`allocate_counts` splits a total over classes
in proportion (largest remainders).

Example:
    >>> from fer_mek import MEKImageProcessor
    >>> from fer_mek.data import collate_fn, load_source, make_transform
    >>> data = load_source("synthetic")
    >>> processor = MEKImageProcessor(size={"height": 112, "width": 112})
    >>> train = data["train"].with_transform(make_transform(processor, train=True))  # + flipped_pixel_values
    >>> batch = collate_fn([train[0], train[1]])

This subpackage imports ``datasets``, timm and torchvision; ``import fer_mek`` does not import it.
"""

from .batch_augment import (
    NUM_UNIFORMS,
    BatchAugmentation,
    batched_augmentation_kwargs,
    batched_augmentation_supports,
)
from .cache import CachedImages, cached_pixels, identity_collate
from .common import (
    SPLITS,
    VAL_SPLITS,
    BadInputLog,
    DataError,
    allocate_counts,
    class_counts,
    format_summary,
    get_metadata,
    permutation_split,
    set_metadata,
    stratified_split,
    summarize,
)
from .fer2013 import load_fer2013
from .folder import load_hub_dataset, load_image_folder
from .rafdb import load_rafdb
from .sources import SOURCES, load_source
from .synthetic import (
    RAFDB_TRAIN_COUNTS,
    SYNTHETIC_IMAGE_SIZE,
    SYNTHETIC_NUM_IMAGES,
    default_cache_dir,
    load_synthetic,
    render_face,
)
from .transforms import (
    MEKBatchTransform,
    build_eval_transform,
    build_train_transform,
    collate_fn,
    make_transform,
)

__all__ = [
    "NUM_UNIFORMS",
    "RAFDB_TRAIN_COUNTS",
    "SOURCES",
    "SPLITS",
    "SYNTHETIC_IMAGE_SIZE",
    "SYNTHETIC_NUM_IMAGES",
    "VAL_SPLITS",
    "BadInputLog",
    "BatchAugmentation",
    "CachedImages",
    "DataError",
    "MEKBatchTransform",
    "allocate_counts",
    "batched_augmentation_kwargs",
    "batched_augmentation_supports",
    "build_eval_transform",
    "build_train_transform",
    "cached_pixels",
    "class_counts",
    "collate_fn",
    "default_cache_dir",
    "format_summary",
    "get_metadata",
    "identity_collate",
    "load_fer2013",
    "load_hub_dataset",
    "load_image_folder",
    "load_rafdb",
    "load_source",
    "load_synthetic",
    "make_transform",
    "permutation_split",
    "render_face",
    "set_metadata",
    "stratified_split",
    "summarize",
]
