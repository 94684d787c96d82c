"""Streaming mean and covariance in float64: features arrive batch by batch, images are never all held."""

from __future__ import annotations

import numpy as np
import torch


class RunningStats:
    def __init__(self, dim: int):
        self.n = 0
        self.sum = np.zeros(dim, dtype=np.float64)
        self.outer = np.zeros((dim, dim), dtype=np.float64)

    def update(self, feats: torch.Tensor | np.ndarray) -> None:
        # The products run in torch, not numpy: numpy's BLAS keeps its own thread pool, and alternating it with
        # torch's (one small product per extracted batch) made the two pools fight for the cores: 2.4 s of
        # 4.4 s for 5,000 judge features on two threads here.
        x = torch.as_tensor(feats).detach().cpu().to(torch.float64)
        self.n += x.shape[0]
        self.sum += x.sum(dim=0).numpy()
        self.outer += (x.T @ x).numpy()

    @property
    def mean(self) -> np.ndarray:
        return self.sum / self.n

    @property
    def cov(self) -> np.ndarray:
        """Unbiased (N-1) covariance, as numpy.cov and the reference FID code use."""
        if self.n < 2:
            raise ValueError("covariance needs at least 2 samples")
        mu = self.mean
        return (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)

    def as_fid_stats(self) -> dict[str, np.ndarray]:
        return {"mu": self.mean, "sigma": self.cov}


# -- reference statistics files (pytorch-fid's .npz layout: `mu` (d,), `sigma` (d, d)) -----------------

def _checked(mu, sigma, where: str) -> dict[str, np.ndarray]:
    """float64 copies of mu and sigma, or one BenchError line saying what is wrong."""
    from bench.errors import BenchError

    for name, a in (("mu", mu), ("sigma", sigma)):
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
            kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise BenchError(f"{where}: '{name}' is not a numeric array ({kind})")
    if mu.ndim != 1 or mu.shape[0] < 1:
        raise BenchError(f"{where}: 'mu' has shape {mu.shape}, expected (d,)")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise BenchError(f"{where}: 'sigma' has shape {sigma.shape}, expected ({d}, {d}) for a {d}-dimensional 'mu'")
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    for name, a in (("mu", mu), ("sigma", sigma)):
        if not np.isfinite(a).all():
            raise BenchError(f"{where}: '{name}' contains NaN or inf")
    for name, a in (("mu", mu), ("sigma", sigma)):
        # Feature statistics are O(1)-O(1e4); past 1e100 the FID's products overflow to inf (mu = 1e300 was
        # scored as FID inf and logged as a finished run).
        if np.abs(a).max() > 1e100:
            raise BenchError(f"{where}: '{name}' has values of magnitude {np.abs(a).max():.3g}, not feature statistics")
    if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8 * max(1.0, float(np.abs(sigma).max()))):
        raise BenchError(f"{where}: 'sigma' is not symmetric, so it is not a covariance matrix")
    # A covariance has no clearly negative eigenvalue (sigma = -I was scored as FID -116.6). Only clearly: a singular
    # covariance (fewer images than dimensions) stored in float32 has eigenvalues down to ~-1e-8 of the largest
    # from rounding alone. So sigma + 1e-6 * trace(sigma) * I must factor (a Cholesky, ~0.1 s at d = 2,048, not an
    # eigendecomposition); trace(sigma) >= its largest eigenvalue, and is negative only for what is no covariance.
    trace = float(np.trace(sigma))
    if trace < 0 or (trace == 0 and np.any(sigma)):
        raise BenchError(f"{where}: 'sigma' has a negative trace ({trace:.3g}), so it is not a covariance matrix")
    try:
        np.linalg.cholesky(sigma + (1e-6 * trace) * np.eye(d))
    except np.linalg.LinAlgError:
        raise BenchError(f"{where}: 'sigma' has a clearly negative eigenvalue, so it is not a covariance matrix") from None
    return {"mu": mu, "sigma": sigma}


# Largest feature dimension a statistics file may declare: the extractors give 128-2,048 (DINOv2 1,024, CLIP
# 768); 8,192 bounds sigma at 512 MiB, so a file whose header declares (100000, 100000) is refused before
# numpy allocates it.
MAX_DIM = 8192


def _declared_shapes(path) -> dict[str, tuple]:
    """Shape of each .npy member of an .npz as its header declares it, read without loading the data."""
    import zipfile

    shapes = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, _ = read(f)
            shapes[info.filename[:-4]] = shape
    return shapes


def load_reference_stats(path) -> dict[str, np.ndarray]:
    """Read a reference statistics file (pytorch-fid's `.npz`: `mu` (d,), `sigma` (d, d)) without unpickling
    anything; returns what `RunningStats.as_fid_stats()` returns. Any problem is one BenchError line."""
    import zipfile
    import zlib
    from pathlib import Path

    from bench.errors import BenchError

    path = Path(path)
    refused = f"{path}: refused to load: it holds pickled Python objects, which a statistics file never holds " \
              "(loading it could run code)"
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise BenchError(f"{path}: statistics file not found") from None
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if head.startswith(b"\x80"):  # a pickle (protocol 2+), e.g. torch.save or pickle.dump output
        raise BenchError(refused)
    if not head.startswith(b"PK"):
        kind = "a single .npy array" if head.startswith(b"\x93NUMPY") else "not a zip archive"
        raise BenchError(f"{path}: not an .npz statistics file ({kind}; expected arrays mu and sigma)")
    try:
        for name, shape in _declared_shapes(path).items():
            if name in ("mu", "sigma") and any(n > MAX_DIM for n in shape):
                raise BenchError(f"{path}: '{name}' declares shape {shape}; feature statistics have at most "
                                 f"{MAX_DIM} dimensions")
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("mu", "sigma") if k not in npz.files]
            if missing:
                raise BenchError(f"{path}: statistics file has no {' or '.join(map(repr, missing))} "
                                 f"(keys: {', '.join(npz.files) or 'none'}; expected mu and sigma)")
            mu, sigma = npz["mu"], npz["sigma"]
    except BenchError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array inside the .npz: never unpickled
            raise BenchError(refused) from None
        raise BenchError(f"{path}: not a readable .npz statistics file ({str(exc).splitlines()[0]})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error) as exc:
        raise BenchError(f"{path}: not a readable .npz statistics file ({type(exc).__name__})") from None
    return _checked(mu, sigma, str(path))


def save_reference_stats(stats: dict[str, np.ndarray], path) -> str:
    """Write `{"mu", "sigma"}` (as `as_fid_stats()` returns) in pytorch-fid's `.npz` layout, atomically and
    at exactly `path`; returns the file's sha256."""
    import hashlib
    import io
    from pathlib import Path

    from bench.io import atomic_write_bytes

    clean = _checked(np.asarray(stats["mu"]), np.asarray(stats["sigma"]), "statistics to save")
    buf = io.BytesIO()
    np.savez(buf, mu=clean["mu"], sigma=clean["sigma"])
    data = buf.getvalue()
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()
