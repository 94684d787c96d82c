import pytest
import torch

from bench.data.transforms import fit_float, to_float, to_uint8


def test_uint8_float_round_trip_is_exact():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    f = to_float(x)
    assert f.min() == -1 and f.max() == 1
    assert torch.equal(to_uint8(f), x)


def test_pad_then_crop_returns_the_original_pixels():
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    padded = fit_float(x, 32, "pad")
    assert padded.shape[-1] == 32 and torch.all(padded[..., :2, :] == -1) and torch.all(padded[..., :, -2:] == -1)
    assert torch.equal(fit_float(padded, 28, "pad"), x)
    with pytest.raises(ValueError, match="even size difference"):
        fit_float(x, 31, "pad")


def test_resize_mode_changes_size_only_when_needed():
    x = torch.rand(1, 3, 28, 28)
    assert fit_float(x, 28) is x
    assert fit_float(x, 32).shape == (1, 3, 32, 32)
