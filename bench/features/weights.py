"""One manifest of every pretrained file ganbench may use, and offline-safe resolution of each.

Lookup order for a manifest entry: an explicit path from the protocol, then $BENCH_WEIGHTS_DIR, then
torch's hub cache (where torch-fidelity and lpips put downloads), then a download, only when online
and not BENCH_OFFLINE. A missing file is one line naming the file, its digest and how to get it.

The Inception file and the torchvision backbones are published under torch.hub's convention, the first 8
hex digits of the sha256 in the file name; their full sha256 (`FULL_SHA256`, each beginning with that prefix)
is pinned here, so no other file passes. DINOv2's has no published digest. Files given by explicit path are
checked against the sha256 the protocol states, and the actual sha256 always enters the protocol fingerprint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.errors import BenchError
from bench.io import home_relative, offline, sha256_file
from bench.registry import Registry


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    file: str
    used_by: str
    source: str  # where the file comes from (taken from the library that defines it)
    sha256: Optional[str] = None
    sha256_prefix: Optional[str] = None
    packaged: Optional[Path] = None  # shipped inside ganbench itself (the judges): looked up there first

    def digest_text(self) -> str:
        if not self.pinned:
            return "not published; the file's own sha256 enters the fingerprint"
        return self.sha256 or f"{self.sha256_prefix}... (prefix)"

    @property
    def pinned(self) -> bool:
        return bool(self.sha256 or self.sha256_prefix)

    def matches(self, digest: str) -> bool:
        if self.sha256:
            return digest == self.sha256
        if self.sha256_prefix:
            return digest.startswith(self.sha256_prefix)
        # No digest is published for this file (DINOv2): any file is accepted and its actual sha256, which
        # enters the fingerprint and cache keys, keeps runs on different files apart. Pin it with
        # `weights: {path, sha256}` in the protocol.
        return True


def _inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


# Full sha256 of the files whose names carry only an 8-hex prefix (torch.hub's convention), as the files
# published at the manifest's URLs hash (the same digests are pinned by many public projects that verify these
# downloads); each begins with its name's prefix, which `_full_digest` checks.
FULL_SHA256 = {
    "weights-inception-2015-12-05-6726825d.pth": "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    "alexnet-owt-7be5be79.pth": "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
    "vgg16-397923af.pth": "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    "vgg19-dcbb9e9d.pth": "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
}


# LPIPS's linear heads (Zhang et al. 2018, v0.1) come inside the `lpips` package, not through this manifest:
# the sha256 of the files in richzhang/PerceptualSimilarity's lpips/weights/v0.1/, checked when LPIPS is built
# (bench/metrics/lpips.py), so another package release with other heads cannot change LPIPS silently.
LPIPS_HEADS_SHA256 = {
    "alex": "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "vgg": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
}


def _full_digest(file: str, prefix: str) -> Optional[str]:
    full = FULL_SHA256.get(file)
    if full is not None and not full.startswith(prefix):
        raise AssertionError(f"FULL_SHA256[{file!r}] does not begin with the file name's prefix {prefix}")
    return full


def _torchvision_entry(name: str, weights_enum: str, used_by: str) -> WeightsEntry:
    """An ImageNet backbone from torchvision; its file name carries the sha256 prefix (torch.hub convention)."""
    import torchvision.models as tvm

    url = getattr(tvm, weights_enum).IMAGENET1K_V1.url
    file = url.rsplit("/", 1)[-1]
    prefix = file.rsplit("-", 1)[-1].split(".")[0]
    return WeightsEntry(name=name, file=file, used_by=used_by, source=url, sha256=_full_digest(file, prefix),
                        sha256_prefix=prefix)


def _clip_entry() -> WeightsEntry:
    """OpenAI's CLIP ViT-L/14 TorchScript release; the URL's path segment is the file's full sha256 (OpenAI's
    own loader checks it), and torch-fidelity stores it under `<name>-<sha256>.pt` in torch's hub cache."""
    from torch_fidelity.feature_extractor_clip import MODEL_METADATA, MODEL_URLS

    sha = MODEL_METADATA["clip-vit-l-14"]["hash"]
    return WeightsEntry(name="clip-vit-l-14", file=f"clip-vit-l-14-{sha}.pt", used_by="FD/KD/precision-recall in "
                        "CLIP image-embedding space, extractor clip-vit-l-14", source=MODEL_URLS["clip-vit-l-14"],
                        sha256=sha)


def _manifest() -> dict[str, WeightsEntry]:
    url = _inception_url()
    entries = [
        WeightsEntry(
            name="inception-v3-compat",
            file=url.rsplit("/", 1)[-1],
            used_by="IS, FID, KID, precision/recall (torch-fidelity's port of the 2015-12-05 TF Inception graph)",
            source=url,
            sha256=_full_digest(url.rsplit("/", 1)[-1], "6726825d"),
            sha256_prefix="6726825d",
        ),
        _torchvision_entry("alexnet", "AlexNet_Weights", "LPIPS backbone (default, net='alex')"),
        _torchvision_entry("vgg16", "VGG16_Weights", "LPIPS backbone (net='vgg')"),
        _torchvision_entry("vgg19", "VGG19_Weights", "VGG19 perceptual loss (pix2pixHD)"),
        _clip_entry(),
        WeightsEntry(
            name="dinov2-vit-l-14",
            file="dinov2_vitl14_pretrain.pth",
            used_by="FD/KD/precision-recall in DINOv2 space (FD_DINOv2; Stein et al. 2023), extractor dinov2-vit-l-14",
            source="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
        ),
        *_judge_entries(),
        *_segmenter_entries(),
    ]
    return {e.name: e for e in entries}


# The shipped judges (bench/features/judge.py): full sha256 of each committed file. A retrained judge
# (`bench judge train NAME`) differs in its last bits on another CPU or thread count, so it never matches
# these digests by accident; replacing a shipped judge is a deliberate change of this table.
JUDGE_SHA256 = {
    "mnist": "45e66d8b3fbd2750782c4ce552eef4f08f213fa22858c1ca2a7f9dd7e24aca0b",
    "cifar10": "6219c10acf405f44ad4d2ce570ce13e0b6ee34bcca7b5de7d076e8c74d4be1f3",
}
_JUDGE_USE = {
    "mnist": "judge / judge:mnist: IS, FID, KID on digits (trained on the MNIST training pool)",
    "cifar10": "judge:cifar10: IS, FID, KID on natural images (trained on the CIFAR-10 train split)",
}


def _judge_entries() -> list[WeightsEntry]:
    from bench.features.judge import shipped_file

    return [WeightsEntry(name=f"judge:{n}", file=shipped_file(n).name, used_by=_JUDGE_USE[n],
                         source=f"shipped with ganbench (bench/judges/); rebuild: bench judge train {n}",
                         sha256=sha, packaged=shipped_file(n)) for n, sha in JUDGE_SHA256.items()]


# The shipped semantic networks S (bench/features/segmenter.py): full sha256 of each committed file, as for the
# judges. seg_agreement is measured by the judge-role S; the training-role S is what pix2pixhd_sem's L_sem trains
# against (a file too, so every machine trains against the same network).
SEGMENTER_SHA256 = {
    ("facades_sr", "judge"): "7d0347f6574d3e27be6da322b97fce01e018fc0d94deb374f84cfb9747751a70",
    ("facades_sr", "training"): "d503ee15e8a1e84b0a695c18f460ffae8e96dfb9726d7841ffe30ae492d89993",
}
_SEGMENTER_USE = {
    "judge": "seg_agreement on facades_sr at 128 px (the S that measures; trained on facades train/, held out val/)",
    "training": "L_sem of pix2pixhd_sem on facades_sr at 128 px (the S models train against; never the judge)",
}


def segmenter_name(dataset: str, role: str) -> str:
    """The manifest name of a shipped S (bench/features/segmenter.py reads its files through these two)."""
    return f"segmenter:{dataset}:{role}"


def segmenter_file(dataset: str, role: str) -> Path:
    from bench.features.judge import JUDGE_DIR

    return JUDGE_DIR / f"segmenter-{dataset}-{role}.pt"


def _segmenter_entries() -> list[WeightsEntry]:
    return [WeightsEntry(name=segmenter_name(d, r), file=segmenter_file(d, r).name, used_by=_SEGMENTER_USE[r],
                         source=f"shipped with ganbench (bench/judges/); rebuild: bench judge train {segmenter_name(d, r)}",
                         sha256=sha, packaged=segmenter_file(d, r)) for (d, r), sha in SEGMENTER_SHA256.items()]


def manifest() -> Registry[WeightsEntry]:
    return Registry("weights", _manifest())


def weights_dir() -> Optional[Path]:
    env = os.environ.get("BENCH_WEIGHTS_DIR")
    return Path(env) if env else None


def _hub_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def candidates(entry: WeightsEntry) -> list[Path]:
    out = [entry.packaged] if entry.packaged else []
    if weights_dir():
        out.append(weights_dir() / entry.file)
    out.append(_hub_dir() / entry.file)
    return out


def missing_message(entry: WeightsEntry) -> str:
    where = " or ".join(home_relative(str(p.parent)) for p in candidates(entry))
    if entry.packaged:
        return (f"{entry.name} missing: {entry.file} (sha256 {entry.digest_text()}) not found in {where}; it ships "
                "with ganbench (bench/judges/): restore it from the repository, or copy it into $BENCH_WEIGHTS_DIR")
    return (f"{entry.name} weights missing: {entry.file} (sha256 {entry.digest_text()}) not found in {where}; "
            f"get it with `bench weights fetch {entry.name}` when online, or download {entry.source} and copy it "
            "into $BENCH_WEIGHTS_DIR")


def resolve(name: str, path: Optional[str] = None, sha256: Optional[str] = None,
            allow_download: bool = True) -> tuple[Path, str]:
    """Return (file, its sha256) for a manifest entry, checking its digest; one-line BenchError otherwise."""
    entry = manifest().get(name)
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise BenchError(f"{name} weights file {p} not found (expected sha256 {sha256 or entry.digest_text()})")
        digest = sha256_file(p)
        expected_ok = (digest == sha256) if sha256 else entry.matches(digest)
        if not expected_ok:
            raise BenchError(f"{name} weights file {p} has sha256 {digest}, expected "
                             f"{sha256 or entry.digest_text()}")
        return p, digest
    for p in candidates(entry):
        if p.is_file():
            digest = sha256_file(p)
            if not entry.matches(digest):
                fix = ("the shipped file was modified or replaced; restore it from the repository (a retrained "
                       "judge is a different instrument)" if p == entry.packaged else "delete it and fetch again")
                raise BenchError(f"{name} weights file {p} has sha256 {digest}, expected {entry.digest_text()}; {fix}")
            return p, digest
    if allow_download and not offline() and not entry.packaged:
        target = candidates(entry)[0]
        try:
            import torch

            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(entry.source, str(target), hash_prefix=entry.sha256_prefix,
                                           progress=True)
        except Exception:
            raise BenchError(missing_message(entry) + " (download failed)") from None
        digest = sha256_file(target)
        if not entry.matches(digest):
            target.unlink()
            raise BenchError(f"{name}: downloaded file has sha256 {digest}, expected {entry.digest_text()}; removed")
        return target, digest
    raise BenchError(missing_message(entry))
