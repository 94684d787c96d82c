"""A full output disk (issue 8's last hostile input), on a real filesystem that really fills up.

Each test mounts a small tmpfs (needs root or CAP_SYS_ADMIN, as in CI's container; skipped otherwise, with
the reason) so the kernel itself answers ENOSPC: nothing about the failure is simulated.
- Before any work: preflight estimates what the protocol's checkpoints need and refuses a work folder
  without room (exit 2, one line, the store untouched).
- While writing: a checkpoint write that hits ENOSPC leaves the previous checkpoint intact and readable,
  no temp file behind, and the run ends with one line and exit 2 with its MLflow runs marked FAILED.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import pytest
import torch

import bench.preflight as preflight
from bench.cli import main
from bench.errors import BenchError
from bench.runner import checkpoint
from tests.conftest import tiny_protocol


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of the requested size under tmp_path; unmounted afterwards."""
    mounted = []

    def make(size_kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a small tmpfs here ({(r.stderr or r.stdout).strip()[:80]}); needs root")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Write a filler file until only about `leave` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


ENTRY = """  - name: g
    zoo: mnist_gan
    train: {steps: 2, batch_size: 8, checkpoint_every: 1, log_every: 1}
"""


def test_preflight_refuses_a_work_folder_without_room_and_writes_nothing(tmp_path, small_disk, capsys):
    disk = small_disk(4096)  # 4 MiB; mnist_gan's checkpoints need about 24
    p = tiny_protocol(tmp_path, entries=ENTRY, n_samples=50, batch_size=50)
    code = main(["run", str(p), "--workdir", str(disk / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "MiB free" in err[0] and "need about" in err[0] and str(disk / "runs") in err[0]
    assert not (tmp_path / "mlflow.db").exists()  # checked before the store is opened
    assert [x.name for x in (disk / "runs").iterdir()] == []


def test_a_checkpoint_write_into_a_full_disk_keeps_the_previous_checkpoint(tmp_path, small_disk):
    disk = small_disk(1024)
    path = disk / "latest.pt"
    first = {"format": checkpoint.FORMAT, "w": torch.arange(20_000, dtype=torch.float32)}  # ~80 KB
    checkpoint.write(path, first)
    _fill(disk, 100_000)
    with pytest.raises(BenchError, match="no space left on the device writing latest.pt"):
        checkpoint.write(path, {"format": checkpoint.FORMAT, "w": torch.zeros(200_000)})  # ~800 KB: cannot fit
    assert torch.equal(checkpoint.read(path)["w"], first["w"])  # still complete and matching its sidecar
    assert not list(disk.glob(".*.tmp"))  # the half-written temp file was removed


def test_a_disk_that_fills_during_training_ends_the_run_with_one_line_and_failed_runs(tmp_path, small_disk,
                                                                                       monkeypatch, capsys):
    disk = small_disk(8192)  # room for the sample grid, not for a ~12 MiB checkpoint
    # Skip the preflight estimate: this is the second line of defence, a disk that fills mid-run.
    monkeypatch.setattr(preflight, "_check_space", lambda folder, need: None)
    p = tiny_protocol(tmp_path, entries=ENTRY, n_samples=50, batch_size=50)
    code = main(["run", str(p), "--workdir", str(disk / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    msg = [line for line in err if "no space left" in line]
    assert len(msg) == 1 and "latest.pt" in msg[0] and "--resume" in msg[0]
    assert not list(disk.rglob(".*.tmp")) and not list(disk.rglob("latest.pt"))
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path.as_posix()}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert runs and {r.info.status for r in runs} == {"FAILED"}  # never left RUNNING
