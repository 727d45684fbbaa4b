"""The FER-2013 references' ten-crop evaluation (``tencrop_source``) against their own steps on fixed images.

The references (written out below with torchvision's own transforms, as the sources use them):
- usef-kh/fer data/fer2013.py:50-57 + data/dataset.py:22-24 + utils/loops.py:57-65: ``Image.fromarray`` of the float64
  pixel array (mode "F"), ``TenCrop(40)``, ``ToTensor()`` per crop (no division for float images),
  ``Normalize(0, 255)``, the ten crops through the network, logits summed / 10.
- LetheSec dataset.py:80-89 + evaluate.py:51-61: the same with ``Grayscale()`` first (uint8 "L": ``ToTensor`` divides
  by 255, then ``Normalize(0, 255)`` again).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image

from fer_mek import FER2013_LABELS, MEKConfig, MEKForImageClassification
from fer_mek.evaluation import evaluation_settings, predict_split
from fer_mek.evaluation import main as evaluate_main
from fer_mek.image_processing_mek import MEKImageProcessor
from fer_mek.tta import five_crop, tta_forward, tta_input_size, tta_views
from tests.data_fixtures import FER_USAGE_COUNTS

#: (backbone, the source's image_std after fer-mek's 1/255 rescale, whether the source converts with Grayscale()).
SOURCES = {"khaireddin_vgg": (1.0, False), "lethesec_resnet18": (255.0, True)}


def fixed_images(count: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(count, 48, 48))
    ramp = np.linspace(0, 120, 48)[None, :]  # not mirror-symmetric: the crops and mirrors differ
    return [np.clip(image + ramp, 0, 255).astype(np.uint8) for image in base]


def source_tencrop_logits(model, images: list[np.ndarray], grayscale: bool) -> torch.Tensor:
    """The source's steps: PIL 'F' image of the float64 array -> [Grayscale] -> TenCrop(40) -> ToTensor ->
    Normalize(0, 255) per crop -> network on [B * 10, 1, 40, 40] -> view(B, 10, K) -> sum / 10."""
    steps = ([T.Grayscale()] if grayscale else []) + [
        T.TenCrop(40),
        T.Lambda(lambda crops: torch.stack([T.ToTensor()(crop) for crop in crops])),
        T.Lambda(lambda tensors: torch.stack([T.Normalize(mean=(0,), std=(255,))(t) for t in tensors])),
    ]
    transform = T.Compose(steps)
    inputs = torch.stack([transform(Image.fromarray(image.astype(np.float64))) for image in images])
    bs, ncrops, c, h, w = inputs.shape
    with torch.no_grad():
        outputs = model(pixel_values=inputs.view(-1, c, h, w)).logits.view(bs, ncrops, -1)
    return torch.sum(outputs, dim=1) / ncrops


def make_model(backbone: str, std: float) -> MEKForImageClassification:
    torch.manual_seed(0)
    config = MEKConfig(backbone=backbone, image_size=40, image_mean=[0.0] * 3, image_std=[std] * 3,
                       id2label=dict(enumerate(FER2013_LABELS)), head_init="pytorch")
    model = MEKForImageClassification(config)
    # Input-sensitive outputs: BatchNorm statistics of inputs at the source's scale.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average of this one batch
    with torch.no_grad():
        model.train()(pixel_values=torch.rand(32, 3, 40, 40) / std)
    return model.eval()


def test_views_are_torchvision_tencrop():
    x = torch.rand(2, 3, 48, 48)
    views = tta_views(x, "tencrop_source", 40)
    reference = TF.ten_crop(x, [40, 40])  # five_crop(img) + five_crop(hflip(img))
    assert len(views) == 10
    for view, crop in zip(views, reference, strict=True):
        assert torch.equal(view, crop)
    assert [v.shape[-1] for v in tta_views(x, "tencrop_source")] == [40] * 10  # 5/6 of 48 by default
    centre = five_crop(torch.arange(48.0).view(1, 1, 1, 48).expand(1, 1, 48, 48), 40)[4]
    assert centre[0, 0, 0, 0] == 4  # round((48 - 40) / 2)
    assert (tta_input_size("tencrop_source", 40), tta_input_size("tencrop", 40)) == (48, 40)


@pytest.mark.parametrize("backbone", sorted(SOURCES))
def test_evaluation_equals_the_sources_ten_crop(backbone):
    """predict_split with ``tencrop_source`` on a datasets split of 48-px grey images = the source's steps."""
    std, grayscale = SOURCES[backbone]
    model = make_model(backbone, std)
    images = fixed_images()
    labels = [i % 7 for i in range(len(images))]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(FER2013_LABELS))})
    dataset = Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "label": labels},
                                features=features)
    processor = MEKImageProcessor.from_model_config(model.config)
    settings = evaluation_settings(processor, tta="tencrop_source")
    probabilities, references = predict_split(model, processor, dataset, settings, batch_size=4)
    expected = source_tencrop_logits(model, images, grayscale)
    assert references.tolist() == labels
    torch.testing.assert_close(probabilities.log(), expected.log_softmax(-1), rtol=1e-4, atol=1e-5)
    assert probabilities.argmax(-1).tolist() == expected.argmax(-1).tolist()
    assert (expected - expected.mean(0)).abs().max() > 0.05  # the images give different logits
    # Resized to the model's 40 px and enlarged back (prediction's path) is not the source's: the test can tell.
    small = processor([Image.fromarray(a) for a in images], return_tensors="pt")["pixel_values"]
    assert small.shape[-1] == 40
    with torch.no_grad():
        assert (tta_forward(model, small, "tencrop_source")[0].log() - probabilities.log()).abs().max() > 1e-3
    # Logits, not probabilities, are averaged: the mean of the crops' softmax is another number.
    with torch.no_grad():
        crops = torch.stack([model(pixel_values=v).logits for v in tta_views(
            torch.stack([torch.from_numpy(a).float()[None].expand(3, -1, -1) / 255 / std for a in images]),
            "tencrop_source", 40)])
    torch.testing.assert_close(probabilities, crops.mean(0).softmax(-1), rtol=1e-4, atol=1e-6)
    assert (probabilities - crops.softmax(-1).mean(0)).abs().max() > 1e-5


def test_prediction_at_the_model_size_enlarges_to_six_fifths():
    """Prediction's processor gives 40-px images: they are enlarged to 48 first; maps of the centre crops."""
    model = make_model("lethesec_resnet18", 1.0)
    x = torch.rand(2, 3, 40, 40)
    enlarged = torch.nn.functional.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)
    with torch.no_grad():
        small, maps = tta_forward(model, x, "tencrop_source", attention_maps=True)
        big, _ = tta_forward(model, enlarged, "tencrop_source")
    torch.testing.assert_close(small, big)
    assert maps.shape == (2, 7, 4, 4)


def test_evaluation_script_reports_the_sources_metric_and_ours(tmp_path, capsys):
    """scripts/eval.py on a FER-2013 CSV (PrivateTest): the reference's ten-crop accuracy beside fer-mek's metrics."""
    from fer_mek.data.fixtures import write_fer2013_csv
    from fer_mek.runs import DataOptions

    csv = write_fer2013_csv(tmp_path / "fer2013.csv", FER_USAGE_COUNTS, style="faces")
    model = make_model("khaireddin_vgg", 1.0)
    model.save_pretrained(tmp_path / "model")
    metrics = evaluate_main(["--model", str(tmp_path / "model"), "--source", "fer2013", "--data-root", str(csv),
                             "--tta", "none", "--num-workers", "0", "--device", "cpu"])
    reference = metrics["source_metric"]
    assert (reference["backbone"], reference["tta"], reference["fer2013_test"]) == ("khaireddin_vgg",
                                                                                     "tencrop_source", "PrivateTest")
    split = DataOptions(source="fer2013", data_root=str(csv)).load()["test"]
    images = [np.asarray(image.convert("L")) for image in split["image"]]
    predictions = source_tencrop_logits(model, images, grayscale=False).argmax(-1)
    labels = torch.tensor(split["label"])
    assert reference["accuracy"] == pytest.approx((predictions == labels).float().mean().item())
    recalls = [((predictions == k) & (labels == k)).sum().item() / max(1, (labels == k).sum().item()) for k in range(7)]
    assert reference["per_class_recall"] == pytest.approx(recalls)
    assert reference["mean_class_accuracy"] == pytest.approx(sum(recalls) / 7)
    assert metrics["tta"] == "none" and "mean_class_accuracy" in metrics
    assert "ten-crop accuracy on test (PrivateTest)" in capsys.readouterr().out


def test_training_validation_crops_are_the_evaluation_views():
    """The trainer's ten-crop validation input (fer_mek.data.transforms.build_ncrop_eval_transform, --eval-crops 10)
    and scripts/eval.py's ``tencrop_source`` views are the same crops of the same pixels: the run's validation metric
    is the one evaluation reports as the source's."""
    from fer_mek.data.transforms import build_eval_transform, build_ncrop_eval_transform
    from fer_mek.evaluation import _processor_for_tta

    processor = MEKImageProcessor.from_model_config(make_model("lethesec_resnet18", 255.0).config)
    full = build_eval_transform(_processor_for_tta(processor, "tencrop_source"))
    ncrop = build_ncrop_eval_transform(processor, resize=48, crops=10)
    for array in fixed_images(3, seed=1):
        image = Image.fromarray(array)
        views = torch.cat(tta_views(full(image)[None], "tencrop_source", 40))
        torch.testing.assert_close(views, ncrop(image), rtol=1e-6, atol=1e-7)
