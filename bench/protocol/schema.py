"""Protocol v1: the YAML a user writes, validated by pydantic with unknown keys rejected.

A protocol fixes everything a score depends on: data and its split, the zoo entries and how they are
trained (or which checkpoint is loaded), the evaluation seeds and sample sizes, and the feature
extractor. Two scores are only ever compared inside one protocol fingerprint.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator, PrivateAttr

# Entry names become directory names and MLflow run names: keep them boring.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The entry names of the real-data row (bench/runner/reference.py): real training images, the identity map.
REFERENCE_ROW_NAMES = ("real_data", "identity")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_train_seeds(v: Optional[list[int]]) -> Optional[list[int]]:
    if v is None:
        return v
    if len(set(v)) != len(v):
        raise ValueError("training seeds must be distinct")
    if any(s < 0 or s >= 2**62 for s in v):
        raise ValueError("training seeds must be in [0, 2**62)")
    return v


class DatasetSpec(_Strict):
    name: str = Field(description="data set name, e.g. 'mnist'")
    root: Optional[str] = Field(None, description="folder holding the files; default $BENCH_DATA/<name>")
    resolution: int = Field(gt=0, le=4096)
    channels: Literal[1, 3] = 1
    train_size: int = Field(gt=0, description="images in the training part")
    eval_size: int = Field(gt=1, description="held-out images: never trained on, the FID/KID reference")
    direction: Literal["AtoB", "BtoA"] = Field("AtoB", description="paired data: which half is the input")
    load_size: Optional[int] = Field(None, gt=0, le=8192, description="training jitter: images are resized "
                                     "to this, then randomly cropped back to resolution (pix2pix: 286 for 256)")
    flip: bool = Field(False, description="training augmentation: random horizontal flips")
    center_crop: Optional[int] = Field(None, gt=0, le=16384, description="image folders (celeba, image_folder): "
                                       "side of the centred square cut before resizing; default the short side")
    label_nc: Optional[int] = Field(None, ge=2, le=256, description="label maps (cityscapes, labelmap): label ids "
                                    "0..label_nc-1, one one-hot input channel each; default 35 for cityscapes")
    instance: Optional[bool] = Field(None, description="label maps: add the instance boundary map as one more "
                                     "input channel, read from <split>_inst/ (default true)")
    aspect: int = Field(1, ge=1, le=16, description="label maps (cityscapes, labelmap), pix2pixhd only: read each "
                        "frame whole, width = aspect x resolution, height = resolution (cityscapes: 2); "
                        "1 = square tiles (bench/data/labelmap.py)")
    scale: Optional[int] = Field(None, ge=2, le=16, description="super-resolution (facades_sr, superres): the "
                                 "input is the image downscaled this many times, bicubic; default 4")
    ab_half: Optional[Literal["A", "B"]] = Field(None, description="super-resolution from side-by-side AB files "
                                                 "(or A/ B/ folders): which half is the image (facades_sr: A)")
    domain_sizes: Literal["train_size", "all"] = Field("train_size", description="unpaired data: 'all' trains "
                                                       "on every training image of each domain (they may differ "
                                                       "in size, as CycleGAN's unaligned loader); train_size is "
                                                       "then the least each domain must have")
    colourise: bool = Field(False, description="grey -> RGB pairs from any RGB set: the images are the targets, "
                            "their BT.601 luma (on all three channels) the inputs (bench/data/colourise.py)")

    @property
    def frame(self) -> tuple[int, int]:
        """(height, width) of every image of this data set: square unless label maps are read as whole frames."""
        return self.resolution, self.aspect * self.resolution

    @model_validator(mode="after")
    def _load_not_smaller(self):
        if self.load_size is not None and self.load_size < self.resolution:
            raise ValueError(f"load_size {self.load_size} is smaller than resolution {self.resolution}")
        return self


class LRSchedule(_Strict):
    kind: Literal["constant", "linear", "step"] = "constant"
    start: float = Field(0.5, ge=0, lt=1, description="linear: fraction of the steps after which the rate "
                         "falls linearly to 0 (0.5 = the second half, as pix2pix and CycleGAN)")
    every: int = Field(100, gt=0, description="step: multiply the rate by gamma every N steps (StepLR)")
    gamma: float = Field(0.1, gt=0, le=1)


class TrainSpec(_Strict):
    steps: int = Field(ge=0, description="optimisation steps; 0 = evaluate the untrained architecture")
    batch_size: int = Field(64, gt=0, description="global real batch (split evenly over torchrun ranks)")
    checkpoint_every: int = Field(500, gt=0)
    log_every: int = Field(50, gt=0)
    sample_every: int = Field(0, ge=0, description="save a fixed-noise grid every N steps; 0 = only at the end")
    lr_schedule: LRSchedule = Field(default_factory=LRSchedule)
    grad_clip: float = Field(0.0, ge=0, description="clip each network's global gradient norm to this (0 = off)")
    ema: float = Field(0.0, ge=0, lt=1, description="EMA decay of G's weights, used for sampling (0 = off)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype (fp16 needs CUDA)")
    channels_last: bool = Field(False, description="NHWC memory format for conv nets (faster on CUDA, and on CPU with "
                                "oneDNN: the DCGAN 64 px step 11% faster here; bench perf train)")
    fused_adam: bool = Field(False, description="Adam's fused kernel instead of its multi-tensor loop: the same "
                             "update to float rounding, 15% of a pix2pix 256 px step here (bench perf train)")
    gemm_convs: bool = Field(False, description="while training, weight-bound convolutions (>= 2**20 weights at "
                             "<= 64 output positions a batch, input positions for a transposed one: a U-Net's inner "
                             "layers at batch 1) run as unfold + one matrix product: the same map to float "
                             "rounding, faster on CPU (bench/runner/gemm_convs.py; bench perf train)")
    keep_last: int = Field(1, ge=1, description="also keep the last K periodic checkpoints as step-*.pt")
    eval_every: int = Field(0, ge=0, description="score FID on eval_n samples every N steps, log train/fid "
                            "and keep the best as best.pt (0 = off)")
    eval_n: int = Field(500, gt=1, description="samples per in-training FID")
    patience: int = Field(0, ge=0, description="with eval_every: stop training once the in-training FID has not "
                          "improved for this many steps (the course's 10,000); 0 = never")
    init_from: Optional[str] = Field(None, description="start from the final weights of this earlier entry (the "
                                     "same training seed); e.g. pix2pixHD's local enhancer from its global generator")

    @model_validator(mode="after")
    def _patience_needs_monitor(self):
        if self.patience and not self.eval_every:
            raise ValueError("patience needs eval_every (the in-training FID it watches)")
        return self


class EntrySpec(_Strict):
    name: str
    zoo: str
    config: dict[str, Any] = Field(default_factory=dict)
    train: Optional[TrainSpec] = None
    checkpoint: Optional[str] = Field(None, description="load this checkpoint instead of training (a path; or a "
                                      "mapping {path, format, latent_dim, ...} for a generator you bring)")
    fit: Literal["resize", "pad"] = Field("resize", description="how data meets a model of another resolution: "
                                          "bilinear resize, or black border (train) / centre crop (scoring)")
    train_seeds: Optional[list[int]] = Field(None, min_length=1, description="train this entry once per training "
                                             "seed (overrides the protocol's train_seeds)")
    # The family's typed Config with every default filled in, resolved once when the protocol is loaded
    # (bench/protocol/load.py `resolved_config`); the fingerprint and every build use this one object.
    _resolved: Any = PrivateAttr(default=None)

    @field_validator("checkpoint")
    @classmethod
    def _a_path(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.strip():
            raise ValueError("checkpoint: an empty path; give the file to load, or leave the key out to train")
        return v

    @model_validator(mode="before")
    @classmethod
    def _your_generator(cls, data: Any) -> Any:
        """`checkpoint: {path, format, latent_dim, ...}` is a generator you bring (zoo/external.py): the mapping
        becomes the `external` family's config and the checkpoint its path."""
        if not (isinstance(data, dict) and isinstance(data.get("checkpoint"), dict)):
            return data
        ckpt = dict(data["checkpoint"])
        if "path" not in ckpt:
            raise ValueError("checkpoint: a mapping needs 'path' (and format, latent_dim, resolution, ...)")
        if data.get("zoo", "external") != "external":
            raise ValueError("checkpoint given as a mapping is a generator you bring (zoo: external); for a "
                             f"'{data['zoo']}' checkpoint give its path as a string")
        if data.get("config"):
            raise ValueError("for a generator you bring, put its settings under checkpoint:, not config:")
        return {**data, "zoo": "external", "checkpoint": str(ckpt.pop("path")), "config": ckpt}

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        if not _SAFE_NAME.match(v):
            raise ValueError("entry names use letters, digits, '_', '-', '.', start with a letter or digit, "
                             "at most 64 characters")
        return v

    @field_validator("train_seeds")
    @classmethod
    def _train_seeds(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        return _check_train_seeds(v)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.train is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of 'train' or 'checkpoint'")
        if self.train_seeds is not None and self.train is None:
            raise ValueError("train_seeds applies to entries that train, not to a loaded checkpoint")
        return self


class WeightsSpec(_Strict):
    path: str
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$")


class EvaluationSpec(_Strict):
    n_samples: int = Field(gt=1, description="generated images per eval seed")
    seeds: list[int] = Field(min_length=1, description="one full evaluation per seed; scores are mean ± std")
    batch_size: int = Field(100, gt=0)
    extractor: str = "judge"
    weights: Optional[WeightsSpec] = Field(None, description="explicit weights file for the extractor")
    metrics: list[str] = Field(default_factory=lambda: ["is", "fid", "kid"], min_length=1)
    is_splits: int = Field(10, gt=0)
    kid_subsets: int = Field(100, gt=0)
    kid_subset_size: int = Field(1000, gt=1, description="shrunk to min(this, n_fake, n_real)")
    kid_interval: bool = Field(True, description="a 95% interval for KID (variance from all pairs of points)")
    fid_interval_groups: int = Field(10, ge=0, description="jackknife groups behind the FID 95% interval (0 = off)")
    fid_inf_points: int = Field(5, ge=0, description="subset sizes for the FID_inf extrapolation (0 = off)")
    prc_neighborhood: int = Field(3, gt=0, description="k of the k-NN manifolds for precision/recall")
    lpips_net: Literal["alex", "vgg"] = Field("alex", description="LPIPS backbone (AlexNet needs >= 31 px)")
    diversity_pairs: int = Field(100, gt=0, description="seeded image pairs for lpips_diversity")
    ppl_samples: int = Field(1000, gt=1, description="latent pairs per seed for ppl (the StyleGAN paper: 100,000)")
    truncation_psis: list[float] = Field(default_factory=lambda: [0.5, 0.7, 1.0], min_length=1,
                                         description="psi values of the fid_truncation curve")
    reference: bool = Field(True, description="also score the real-data row: training images drawn as samples, or "
                            "for translation the identity map (input as output), through this same evaluation "
                            "(bench/runner/reference.py); it costs no training")
    # Settings a metric declares in its own file (Metric.settings), written as flat evaluation keys in the YAML;
    # the loader (bench/protocol/load.py) moves them here and checks them against the metric's model, so a new
    # metric's setting needs no line in this schema.
    metric_settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("truncation_psis")
    @classmethod
    def _psis(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= p <= 1.0 for p in v) or len(set(v)) != len(v):
            raise ValueError("truncation_psis must be distinct values in [0, 1]")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics_once(cls, v: list[str]) -> list[str]:
        # A metric listed twice was computed twice per seed: its per-seed list doubled, so one evaluation seed
        # showed a std of 0.0 and the intervals and tests ran on duplicated values.
        twice = sorted({m for m in v if v.count(m) > 1})
        if twice:
            raise ValueError(f"metrics listed more than once: {', '.join(twice)}")
        return v

    @field_validator("fid_interval_groups")
    @classmethod
    def _off_or_two(cls, v: int) -> int:
        if v == 1:
            raise ValueError("an interval needs at least 2 groups (0 turns it off)")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("eval seeds must be distinct")
        if any(s < 0 or s >= 2**62 for s in v):
            raise ValueError("eval seeds must be in [0, 2**62)")
        return v

    @model_validator(mode="after")
    def _enough_for_neighbours(self):
        if "precision_recall" in self.metrics and self.n_samples <= self.prc_neighborhood:
            raise ValueError(f"precision_recall needs n_samples > prc_neighborhood ({self.prc_neighborhood})")
        return self


class TrackingSpec(_Strict):
    uri: Optional[str] = Field(None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    experiment: Optional[str] = Field(None, description="MLflow experiment; default the protocol name")


class LiteratureClaim(_Strict):
    """What a paper (or a reference run) reports about two entries of this protocol, best written down before
    the run. Every report checks it against the measured scores with the leaderboard's own test and says whether
    this protocol agrees, contradicts it, and whether that is significant (bench/reporting/leaderboard.py:
    against_literature). A reading of the scores, like `control`: outside the fingerprint."""

    better: str = Field(description="the entry the source reports ahead")
    than: str = Field(description="the entry the source reports behind")
    metric: str = Field(description="a metric key with a direction (bench/metrics: KEY_DIRECTION), e.g. fid, "
                        "kid/mean, is, ssim, psnr, classifier_accuracy")
    source: str = Field(min_length=1, description="the paper and where in it (section, table or figure)")
    evidence: Optional[str] = Field(None, min_length=1, description="what was measured about why this protocol "
                                    "disagrees, when it does (a longer run, the logged losses, an investigation "
                                    "report); shown under the verdict")

    @model_validator(mode="after")
    def _a_comparison(self):
        # the metric's direction is checked with the other registry names (load.check_references): the schema
        # stays below bench.metrics in the layers
        if self.better == self.than:
            raise ValueError(f"a literature claim compares two entries; both are '{self.better}'")
        return self


class Protocol(_Strict):
    name: str
    seed: int = Field(0, ge=0, lt=2**62)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dataset: DatasetSpec
    entries: list[EntrySpec] = Field(min_length=1)
    evaluation: EvaluationSpec
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    train_seeds: Optional[list[int]] = Field(None, min_length=1, description="train every training entry once "
                                             "per seed; unset = one run with the protocol's own seed (seed 0)")
    control: Optional[str] = Field(None, description="the entry every other entry is tested against in reports "
                                   "(e.g. the plain backbone of a techniques comparison); changes no score")
    literature: list[LiteratureClaim] = Field(default_factory=list, description="what papers report about these "
                                              "entries; reports check each claim against the scores; changes no "
                                              "score")

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        if not _SAFE_NAME.match(v):
            raise ValueError("protocol names use letters, digits, '_', '-', '.'")
        return v

    @field_validator("train_seeds")
    @classmethod
    def _train_seeds(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        return _check_train_seeds(v)

    def train_seeds_of(self, entry: EntrySpec) -> list[Optional[int]]:
        """The training seeds `entry` runs under: [None] = the single default run (no seed tag, today's
        paths and seeds); otherwise the entry's own list, else the protocol's. A loaded checkpoint is one run."""
        if entry.train is None:
            return [None]
        seeds = entry.train_seeds if entry.train_seeds is not None else self.train_seeds
        return [None] if seeds is None else list(seeds)

    @field_validator("literature", mode="before")
    @classmethod
    def _no_claims(cls, v: Any) -> Any:
        return [] if v is None else v  # `literature:` with every claim commented out

    @model_validator(mode="after")
    def _eval_part_large_enough(self):
        ev = self.evaluation
        if "precision_recall" in ev.metrics and self.dataset.eval_size <= ev.prc_neighborhood:
            raise ValueError(f"precision_recall needs dataset.eval_size > prc_neighborhood ({ev.prc_neighborhood})")
        return self

    @model_validator(mode="after")
    def _unique_entries(self):
        seen = set()
        for e in self.entries:
            if e.name in seen:
                raise ValueError(f"entry name '{e.name}' is used twice")
            if self.evaluation.reference and e.name in REFERENCE_ROW_NAMES:
                raise ValueError(f"entry name '{e.name}' is the name of the real-data row (evaluation.reference); "
                                 "rename the entry or set evaluation.reference: false")
            seen.add(e.name)
        if self.control is not None and self.control not in seen:
            raise ValueError(f"control '{self.control}' is not an entry; entries: {', '.join(e.name for e in self.entries)}")
        rows = seen | (set(REFERENCE_ROW_NAMES) if self.evaluation.reference else set())
        for claim in self.literature:
            for name in (claim.better, claim.than):
                if name not in rows:
                    raise ValueError(f"literature claim ({claim.source}): '{name}' is not an entry; entries: "
                                     + ", ".join(e.name for e in self.entries))
        return self
