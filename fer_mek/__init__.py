"""fer-mek: MEK facial-expression recognition as a first-class Hugging Face model.

Importing the package registers the MEK config, models and image processor with the transformers Auto classes, so
``AutoModel``, ``AutoModelForImageClassification``, ``AutoImageProcessor`` and ``pipeline("image-classification")``
load saved MEK folders. The training stack (accelerate, datasets) is not imported here.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
)

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

__version__ = "0.1.0"


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
AutoImageProcessor.register(MEKConfig, image_processor_classes={"pil": MEKImageProcessor}, exist_ok=True)

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
