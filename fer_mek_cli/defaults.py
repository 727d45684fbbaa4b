"""Choices and defaults that the command lines show and the library uses: their one place.

Standard library only: the parsers of :mod:`fer_mek_cli` read them before anything heavy is imported, and the
library modules that own each value re-export it under its usual name (``fer_mek.data.common.VAL_SPLITS`` is this
``VAL_SPLITS``).
"""

from __future__ import annotations

__all__ = [
    "BEST",
    "COLOR_JITTER",
    "CROP",
    "CROPS",
    "CROP_RATIO",
    "CROP_SCALE",
    "FER2013_TEST_SPLITS",
    "HFLIP",
    "LAST",
    "RAND_AUGMENT",
    "RE_MODE",
    "RE_MODES",
    "RE_PROB",
    "RE_RATIO",
    "RE_SCALE",
    "ROTATION",
    "ROTATION_INTERPOLATION",
    "SOURCE_ROOTS",
    "SYNTHETIC_IMAGE_SIZE",
    "SYNTHETIC_NUM_IMAGES",
    "TRAIN_INTERPOLATION",
    "VAL_SPLITS",
]

# ----------------------------------------------------------------------------------------------- runs
#: A run's two model folders (``runs/<name>/best``, ``last``): the checkpoint evaluated on test and the final one.
BEST = "best"
LAST = "last"

# ----------------------------------------------------------------------------------------------- data
#: ``--source`` values (the one list: the trainer, evaluation and ``prepare_data`` offer these, in this order) and
#: what each one's ``root`` is; :data:`fer_mek.data.sources.SOURCES` pairs each with its loader.
SOURCE_ROOTS: dict[str, str] = {
    "synthetic": "nothing: the images are generated (and cached)",
    "rafdb": "the RAF-DB basic folder (EmoLabel/ + Image/) or a train/1..7 + test/1..7 folder tree",
    "fer2013": "fer2013.csv, a folder containing it, or a train/<class> + test/<class> folder tree",
    "folder": "an image-folder tree: train/<class>/ and test/<class>/",
    "hub": "a Hub dataset id or a save_to_disk folder (e.g. the output of prepare_data.py)",
}
#: How the validation split is made from train (``val_split`` of every loader): ``stratified`` (fer-mek's default:
#: a stratified ``val_fraction``, :func:`fer_mek.data.stratified_split`), ``permutation`` (MEK-CV's: the first
#: ``int(n * val_fraction)`` indices of NumPy's legacy ``seed(seed); permutation(n)`` over the train items in
#: ImageFolder order, :func:`fer_mek.data.permutation_split`) or ``none`` (the official MEK code's: no validation
#: split, train keeps every training item, ``validation`` is empty).
VAL_SPLITS: tuple[str, ...] = ("stratified", "permutation", "none")
#: Test sets of FER-2013's CSV (``test_split``): ``PrivateTest`` (3,589 images, what papers report), ``PublicTest``
#: (3,589) or both, ``PublicTest+PrivateTest`` (7,178: the ``test/`` folder of the image-folder release, e.g.
#: Kaggle's ``msambare/fer2013``, on which MEK-CV's FER-2013 numbers are measured).
FER2013_TEST_SPLITS: tuple[str, ...] = ("PrivateTest", "PublicTest", "PublicTest+PrivateTest")
#: Default size of the synthetic set (images over train, validation and test): that of the default training run
#: (``fer_mek/train/recipes/synthetic.yaml``); the trainer, evaluation and ``prepare_data`` default to it.
SYNTHETIC_NUM_IMAGES = 12000
#: Default side of the drawn images, in pixels: the default training run's input size, so no resize per sample.
SYNTHETIC_IMAGE_SIZE = 64

# ----------------------------------------------------------------------------------------------- augmentation
# The MEK training augmentation (official code: RandAugment m9 mstd0.5 inc1, random erasing 0.25), shared by the
# per-sample transform and the batched one (fer_mek.data.batch_augment) and shown as the trainer's defaults.
RAND_AUGMENT = "rand-m9-mstd0.5-inc1"
RE_PROB = 0.25
CROP_SCALE = (0.8, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
ROTATION = 10.0
HFLIP = 0.5
COLOR_JITTER = 0.4
#: ``crop`` of :func:`fer_mek.data.build_train_transform`: timm's random resized crop (fer-mek), MEK-CV's resize +
#: padded crop, or the FER-2013 sources' n-crop chain (``ncrop``: their augmentation, then ``--train-crops`` crops).
CROPS: tuple[str, ...] = ("random-resized", "padded", "ncrop")
CROP = "random-resized"
TRAIN_INTERPOLATION = "bilinear"
ROTATION_INTERPOLATION = "bilinear"
#: Erased area range (timm's default, 2 % to 1/3 of the image) and torchvision's aspect-ratio range.
RE_SCALE = (0.02, 1.0 / 3.0)
RE_RATIO = (0.3, 3.3)
#: ``re_mode``: timm's fills, or torchvision's ``RandomErasing`` (MEK-CV).
RE_MODES: tuple[str, ...] = ("const", "rand", "pixel", "torchvision")
RE_MODE = "const"
