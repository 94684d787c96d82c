"""The MLflow layout, defined once: every tag ganbench writes on a run and reads back.

A protocol run is one parent run (run name = the protocol's name) with run-wide facts as tags, and one
child run per scored row: each entry once per training seed (run name `<entry>` or `<entry>/seed-<t>`) and
the real-data row (tag BASELINE). Metrics are logged on the child as `<key>` (the mean over evaluation
seeds; interval ends are keys of their own, e.g. `fid/ci95_low`), `<key>/seed_std` (sample std, with two or
more evaluation seeds), and per-seed values as the history of `per_seed/<key>` (step i = the i-th
evaluation seed); training curves as `loss/<name>` and `train/<name>`. The pipeline writes
through these names and the leaderboard, reports and the regression gate read through them, so a renamed
tag cannot leave a reader looking for the old one.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

PARENT = "mlflow.parentRunId"  # MLflow's own: set on every child run

# -- the parent (protocol) run -------------------------------------------------------------------------
PROTOCOL = "bench.protocol"
FINGERPRINT = "bench.fingerprint"
GIT_SHA = "bench.git_sha"
DEVICE = "bench.device"
CPU = "bench.cpu"
CPU_DETAIL = "bench.cpu_detail"  # family/model/stepping and ISA: the model name alone is often generic (machine.py)
THREADS = "bench.threads"
EXTRACTOR = "bench.extractor"
EXTRACTOR_SHA256 = "bench.extractor_sha256"
VERSION_PREFIX = "bench.version."  # + package name: its installed version
# sha256 of the decoded training and held-out tensors (bench/data/base.py `pixel_digest`). The fingerprint hashes
# the files; runs whose decoders made other pixels of them share it but are not comparable, and the readers
# (leaderboard, report, regression gate) never pool such runs. Absent on runs logged before the tag.
DATA_PIXELS = "bench.data_pixels"

# -- child runs (one per entry and training seed, and the real-data row) ---------------------------------
ENTRY = "bench.entry"
ZOO = "bench.zoo"
TRAIN_SEED = "bench.train_seed"  # only when the protocol trains the entry under several seeds
BASELINE = "bench.baseline"  # the real-data row: "real_data" or "identity" (bench/runner/reference.py)
# "1" on an entry scored at its initialisation (train: {steps: 0} of a model that has something to train): the
# untrained floor of the table, not a competitor, so a protocol's control tests keep it out of their Holm family.
# A steps-0 entry with nothing to train (a bicubic baseline) is a method like any other and is not marked.
UNTRAINED = "bench.untrained"
CHECKPOINT = "bench.checkpoint"
CHECKPOINT_SHA256 = "bench.checkpoint_sha256"
FAILURE = "bench.failure"  # why a run FAILED or was marked KILLED
UNAVAILABLE_PREFIX = "bench.unavailable."  # + metric name: why that metric has no number
# "identical" when every evaluation seed gave bit-identical generated features (a deterministic translator on the
# fixed held-out inputs), "varying" otherwise; absent with one evaluation seed and on runs logged before the tag.
# The leaderboard does not take identical seeds as replicates (bench/reporting/leaderboard.py `two_sample`).
EVAL_OUTPUTS = "bench.eval_outputs"

# -- ownership of a RUNNING run, so a later attempt can close a crashed one ---------------------------------
HOST = "bench.host"
PID = "bench.pid"

UNAVAILABLE_MAX = 500  # characters of a reason kept in a tag


def parent_tags(protocol: str, fingerprint: str, env: Mapping[str, Any], extractor: str,
                extractor_sha256: str) -> dict[str, str]:
    return {PROTOCOL: protocol, FINGERPRINT: fingerprint, GIT_SHA: env["git_sha"], DEVICE: env["device"],
            CPU: env["cpu"], CPU_DETAIL: env["cpu_detail"], THREADS: str(env["torch_threads"]), EXTRACTOR: extractor,
            EXTRACTOR_SHA256: extractor_sha256,
            **({DATA_PIXELS: env["data_pixels"]} if env.get("data_pixels") else {}),
            **{f"{VERSION_PREFIX}{k}": v for k, v in env["packages"].items()}}


def child_tags(protocol: str, fingerprint: str, entry: str, zoo: str, train_seed: Optional[int] = None,
               baseline: Optional[str] = None, untrained: bool = False) -> dict[str, str]:
    tags = {ENTRY: entry, ZOO: zoo, FINGERPRINT: fingerprint, PROTOCOL: protocol}
    if train_seed is not None:
        tags[TRAIN_SEED] = str(train_seed)
    if baseline is not None:
        tags[BASELINE] = baseline
    if untrained:
        tags[UNTRAINED] = "1"
    return tags


def untrained_of(tags: Mapping[str, str]) -> bool:
    return tags.get(UNTRAINED) == "1"


def child_name(entry: str, train_seed: Optional[int] = None) -> str:
    return entry if train_seed is None else f"{entry}/seed-{train_seed}"


def unavailable_tags(reasons: Mapping[str, str]) -> dict[str, str]:
    return {f"{UNAVAILABLE_PREFIX}{k}": v[:UNAVAILABLE_MAX] for k, v in reasons.items()}


def unavailable_of(tags: Mapping[str, str]) -> dict[str, str]:
    """metric -> reason, from a child run's tags."""
    return {k[len(UNAVAILABLE_PREFIX):]: v for k, v in sorted(tags.items()) if k.startswith(UNAVAILABLE_PREFIX)}


def versions_of(tags: Mapping[str, str]) -> dict[str, str]:
    """package -> version, from a parent run's tags."""
    return {k[len(VERSION_PREFIX):]: v for k, v in sorted(tags.items()) if k.startswith(VERSION_PREFIX)}


def is_parent(tags: Mapping[str, str]) -> bool:
    return PARENT not in tags and ENTRY not in tags


def tag_filter(tag: str, value: str, op: str = "=") -> str:
    """An MLflow search clause on one of these tags (names with dots need backquotes)."""
    return f"tags.`{tag}` {op} '{value}'"
