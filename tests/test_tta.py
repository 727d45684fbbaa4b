"""Test-time augmentation views and averaging."""

from __future__ import annotations

import pytest
import torch

from fer_mek.tta import tta_forward, tta_probabilities, tta_views


def test_views_keep_the_input_size():
    x = torch.randn(2, 3, 28, 28)
    assert len(tta_views(x, "none")) == 1
    flip = tta_views(x, "flip")
    assert torch.equal(flip[1], x.flip(-1))
    ten = tta_views(x, "tencrop")
    assert len(ten) == 10 and all(v.shape == x.shape for v in ten)
    for crop, mirrored in zip(ten[:5], ten[5:], strict=True):
        assert torch.equal(mirrored, crop.flip(-1))


def test_probabilities_average_the_views(tiny_model):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = tiny_model(x).logits.softmax(-1)
        mirrored = tiny_model(x.flip(-1)).logits.softmax(-1)
    torch.testing.assert_close(tta_probabilities(tiny_model, x, "none"), plain)
    torch.testing.assert_close(tta_probabilities(tiny_model, x, "flip"), (plain + mirrored) / 2)
    ten = tta_probabilities(tiny_model, x, "tencrop")
    torch.testing.assert_close(ten.sum(-1), torch.ones(3))


def test_forward_gives_the_probabilities_and_the_maps_of_the_whole_image(tiny_model):
    """Prediction's TTA (probabilities + attention maps) is evaluation's: the same views and the same numbers."""
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain, mirrored = tiny_model(x), tiny_model(x.flip(-1))
        for mode in ("none", "flip", "tencrop"):
            probabilities, maps = tta_forward(tiny_model, x, mode)
            assert maps is None
            torch.testing.assert_close(probabilities, tta_probabilities(tiny_model, x, mode))
        probabilities, maps = tta_forward(tiny_model, x, "none", attention_maps=True)
        torch.testing.assert_close(maps, plain.attention_maps)
        flip_maps = (plain.attention_maps + mirrored.attention_maps.flip(-1)) / 2
        for mode in ("flip", "tencrop"):  # ten-crop's maps: the whole image and its mirror, not the crops
            probabilities, maps = tta_forward(tiny_model, x, mode, attention_maps=True)
            torch.testing.assert_close(probabilities, tta_probabilities(tiny_model, x, mode))
            torch.testing.assert_close(maps, flip_maps)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate'"):
        tta_views(torch.zeros(1, 3, 8, 8), "rotate")
