"""`bench perf train` reads the reference scripts' per-step lines: a stand-in script that prints them (no
timing is checked, only which lines count as steps and what happens when a script ends too soon)."""

import pytest

from bench.errors import BenchError
from bench.perf_train import pix2pix_reference_script, pix2pix_reference_steps

LINES = """import sys
print("----------------- Options ---------------")
print("The number of training images = 400")
for i in range({n}):
    print("(epoch: 1, iters: %d, time: 0.500, data: 0.010) G_GAN: 0.700 G_L1: 30.000 D_real: 0.600 D_fake: 0.600 " % (i + 1))
    print("learning rate 0.0002000 -> 0.0002000")  # other lines are not steps
"""


def _checkout(tmp_path, n):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "pix2pix_model.py").write_text("")
    (tmp_path / "train.py").write_text(LINES.format(n=n))
    return pix2pix_reference_script(str(tmp_path))


def test_each_step_line_is_one_step_after_the_warm_up(tmp_path):
    gaps = pix2pix_reference_steps(_checkout(tmp_path, 9), tmp_path, steps=5, warmup=2, threads=1)
    assert len(gaps) == 5 and all(g >= 0 for g in gaps)


def test_a_reference_that_ends_too_soon_is_one_clear_error(tmp_path):
    with pytest.raises(BenchError, match="ended after 3 timed steps"):
        pix2pix_reference_steps(_checkout(tmp_path, 4), tmp_path, steps=5, warmup=2, threads=1)


def test_a_folder_without_the_pix2pix_model_is_refused(tmp_path):
    (tmp_path / "train.py").write_text("")
    with pytest.raises(BenchError, match="junyanz/pytorch-CycleGAN-and-pix2pix"):
        pix2pix_reference_script(str(tmp_path))


def test_dcgan_gaps_that_carry_other_work_are_dropped(tmp_path):
    """The pytorch/examples format: gaps ending at batches 0 and 1 (checkpoint, image saving) and at the epoch's
    partial last batch are not steps; 16 batches per epoch leave 13 clean gaps each."""
    from bench.perf_train import reference_script, reference_steps

    (tmp_path / "dcgan").mkdir()
    (tmp_path / "dcgan" / "main.py").write_text(
        "for e in range(3):\n"
        "    for i in range(16):\n"
        "        print('[%d/3][%d/16] Loss_D: 1.0 Loss_G: 1.0 D(x): 0.5 D(G(z)): 0.5 / 0.5' % (e, i))\n")
    script = reference_script(str(tmp_path))
    assert len(reference_steps(script, steps=20, warmup=2, threads=1)) == 20
    with pytest.raises(BenchError, match="ended after 39 timed steps"):
        reference_steps(script, steps=40, warmup=0, threads=1)
