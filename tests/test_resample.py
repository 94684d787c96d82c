"""bench/data/resample.py: the data's resize gives torch's AVX2 bits on every CPU.

torch's float32 antialias resize rounds differently with its default (non-AVX2) kernels, and rounding to 8 bits
turns that into other pixels. These tests check the replacement against torch's AVX2/AVX-512 kernels bit for
bit, check that it does not depend on which kernels torch dispatches to (a subprocess with
ATEN_CPU_CAPABILITY=default, which is how torch runs on an x86 CPU without AVX2), and decode shipped protocols
there to their pinned pixels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.data import resample
from tests.conftest import REPO, needs_data

# (input H, W) -> (output h, w): the shipped data's resizes (CelebA's 178 px square to 64, facades' 256 to 128
# and the ×4 SR degradation, cityscapes' 1024x2048 frames, MNIST's 28 to 32) and odd shapes both ways.
SHAPES = [((178, 178), (64, 64)), ((256, 256), (128, 128)), ((128, 128), (32, 32)), ((32, 32), (128, 128)),
          ((286, 286), (256, 256)), ((600, 400), (256, 256)), ((1024, 2048), (128, 256)), ((28, 28), (32, 32)),
          ((100, 140), (37, 53)), ((31, 45), (45, 31)), ((218, 178), (64, 64)), ((2, 3), (5, 7))]


def _images(shape, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (2, 3, *shape), dtype=np.uint8))


def _torch(x, size, mode):
    return F.interpolate(x.float(), size=size, mode=mode, align_corners=False, antialias=True)


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().view(torch.int32).numpy()


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("shape,size", SHAPES)
def test_resize_is_torchs_avx2_arithmetic_bit_for_bit(shape, size, mode):
    kernels = torch.backends.cpu.get_cpu_capability()
    if kernels not in ("AVX2", "AVX512"):
        pytest.skip(f"torch runs its {kernels} kernels here; the reference is its AVX2/AVX-512 build")
    x = _images(shape, seed=sum(shape) + sum(size))
    theirs = _torch(x, size, mode)
    np.testing.assert_array_equal(_bits(resample.resize(x, size, mode)), _bits(theirs))
    # the 8-bit path the data use: the same, rounded half to even and clamped, block by block
    as_uint8 = theirs.round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(resample.resize(x, size, mode, to_uint8=True), as_uint8)


_IN_DEFAULT_KERNELS = r"""
import json, sys, numpy as np, torch, torch.nn.functional as F
from bench.data import resample
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
out = {}
for (shape, size, mode) in json.loads(sys.argv[1]):
    x = torch.from_numpy(np.random.default_rng(sum(shape) + sum(size)).integers(0, 256, (2, 3, *shape), dtype=np.uint8))
    ours = resample.resize(x, size, mode)
    theirs = F.interpolate(x.float(), size=size, mode=mode, align_corners=False, antialias=True)
    out[json.dumps([shape, size, mode])] = [ours.numpy().tobytes().hex(), theirs.numpy().tobytes().hex()]
print(json.dumps(out))
"""


def _default_kernels(code: str, *args: str, extra_env: dict | None = None) -> str:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", **(extra_env or {})}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_resize_gives_the_same_bits_when_torch_runs_its_default_kernels():
    cases = [(s, z, m) for s, z in SHAPES[:6] for m in ("bilinear", "bicubic")]
    there = json.loads(_default_kernels(_IN_DEFAULT_KERNELS, json.dumps(cases)))
    torch_differs = 0
    for shape, size, mode in cases:
        ours_there, torch_there = there[json.dumps([list(shape), list(size), mode])]
        ours_here = resample.resize(_images(tuple(shape), sum(shape) + sum(size)), tuple(size), mode)
        assert ours_there == ours_here.numpy().tobytes().hex(), (shape, size, mode)
        torch_differs += torch_there != ours_there
    # Why the module exists: torch's own default kernels round otherwise in most of these cases.
    assert torch_differs >= len(cases) // 2, torch_differs


_DECODE = r"""
import sys, torch
from bench.data.base import pixel_digest
from bench.preflight import preflight
from bench.protocol.load import load_protocol
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
_, data, _ = preflight(load_protocol(sys.argv[1]))
print(pixel_digest(data))
"""


@needs_data
@pytest.mark.parametrize("name", ["celeba-dcgan64", "facades-sr"])
def test_shipped_data_decode_to_the_pinned_pixels_with_default_kernels(name, tmp_path):
    """Two of the nine protocols whose pixels torch's default kernels moved before (CelebA's bilinear 178 -> 64;
    facades-sr's bicubic ×4 degradation, whose shipped segmenters match only the pinned pixels)."""
    pinned = json.loads((REPO / "tests" / "regression" / "pinned-pixels.json").read_text())["protocols"][name]
    digest = _default_kernels(_DECODE, str(REPO / "protocols" / f"{name}.yaml"),
                              extra_env={"BENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert digest == pinned


def _exact_fma32(a, b, c) -> np.float32:
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    near = np.float32(float(exact))
    candidates = [np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf))]
    # nearest, ties to the even significand
    return min(candidates, key=lambda v: (abs(Fraction(float(v)) - exact), int(np.array(v).view(np.int32)) & 1))


def test_fma32_is_correctly_rounded():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(3000).astype(np.float32)
    b = rng.random(3000).astype(np.float32)
    c = (rng.standard_normal(3000) * 300).astype(np.float32)
    got = resample.fma32(a, b, c)
    assert all(got[i] == _exact_fma32(a[i], b[i], c[i]) for i in range(len(a)))
    # Double rounding: (1 + 2^-12)² = 1 + 2^-11 + 2^-24 lies halfway between two float32 values, and a tiny c
    # decides the side; float64 cannot hold the sum, so rounding it to float32 alone would tie to even.
    one = np.float32(1 + 2 ** -12)
    up, down = (resample.fma32(np.array([one]), np.array([one]), np.array([t], np.float32))[0]
                for t in (2.0 ** -80, -2.0 ** -80))
    assert up == _exact_fma32(one, one, np.float32(2.0 ** -80)) == np.float32(1 + 2 ** -11 + 2 ** -23)
    assert down == _exact_fma32(one, one, np.float32(-2.0 ** -80)) == np.float32(1 + 2 ** -11)
    assert np.float32(float(one) * float(one) + 2.0 ** -80) == down  # the naive float64 route ties to even


def test_a_one_pixel_side_is_refused():
    # torch's own kernel returns one value for every row of a 1-pixel-wide input; nothing resizes such images.
    with pytest.raises(ValueError, match="at least 2 pixels"):
        resample.resize(torch.zeros(1, 1, 10, 1, dtype=torch.uint8), (5, 1))
