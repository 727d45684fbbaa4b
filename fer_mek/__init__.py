"""fer-mek: MEK facial-expression recognition as a first-class Hugging Face model.

Importing the package registers the MEK config, models and image processor with the transformers Auto classes, so
``AutoModel``, ``AutoModelForImageClassification``, ``AutoImageProcessor`` and ``pipeline("image-classification")``
load saved MEK folders. The training stack (datasets, OpenCV, matplotlib) is not imported here.

Registering needs the classes, so ``import fer_mek`` imports torch and transformers' configuration, modelling and
image-processing modules (about 3 s on a 2-core CPU; every ``fer_mek.*`` module runs this file first). That is why
the command lines live in :mod:`fer_mek_cli`: they parse their options (``--help``, ``--version``, usage errors)
before this package is imported. Everything else loads where it is used.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
)

from fer_mek_cli.version import __version__ as __version__

from . import losses
from .configuration_mek import MEKConfig
from .image_processing_mek import MEKImageProcessor
from .labels import FER2013_FOLDER_LABELS, FER2013_LABELS, RAFDB_LABELS
from .losses import MEKLoss
from .modeling_mek import (
    MEKForImageClassification,
    MEKImageClassifierOutput,
    MEKModel,
    MEKModelOutput,
    MEKPreTrainedModel,
)


def from_published(*args, **kwargs) -> MEKForImageClassification:
    """A published MEK ResNet checkpoint from the Hub as a model, in one line:
    ``fer_mek.from_published("ToiTenBao/fer-mek-checkpoints", "mek_resnet18_rafdb_msceleb_best.pth")``.

    The model comes with ``model.image_processor`` (the source's serving settings) and ``model.conversion`` (its
    ``conversion.json`` record); ``output_dir=`` also saves it as a folder. Arguments and errors:
    :func:`fer_mek.convert.from_published` (imported on first use, so ``import fer_mek`` stays light).
    """
    from .convert import from_published as convert_from_published

    return convert_from_published(*args, **kwargs)


AutoConfig.register(MEKConfig.model_type, MEKConfig, exist_ok=True)
AutoModel.register(MEKConfig, MEKModel, exist_ok=True)
AutoModelForImageClassification.register(MEKConfig, MEKForImageClassification, exist_ok=True)
# One processor for both backends: transformers asks for "torchvision" whenever torchvision is installed and would
# otherwise print a false "falling back to pil" message. A torchvision resize differs from PIL's by a grey level in
# up to 1.5 % of pixels, so the PIL processor (the pixels training saw) serves both (MEKImageProcessor's docstring).
AutoImageProcessor.register(
    MEKConfig, image_processor_classes={"pil": MEKImageProcessor, "torchvision": MEKImageProcessor}, exist_ok=True
)

__all__ = [
    "FER2013_FOLDER_LABELS",
    "FER2013_LABELS",
    "RAFDB_LABELS",
    "MEKConfig",
    "MEKForImageClassification",
    "MEKImageClassifierOutput",
    "MEKImageProcessor",
    "MEKLoss",
    "MEKModel",
    "MEKModelOutput",
    "MEKPreTrainedModel",
    "from_published",
    "losses",
]
