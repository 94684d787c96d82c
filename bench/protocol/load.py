"""YAML -> validated Protocol, with one-line errors that name the key, where it is, and what is allowed."""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bench.errors import BenchError
from bench.metrics.intervals import METHOD as interval_method
from bench.protocol.schema import DatasetSpec, EntrySpec, EvaluationSpec, Protocol

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class LoadedProtocol:
    protocol: Protocol
    path: Path
    text: str


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one silently,
    so `steps: 10` ... `steps: 1000` would run whichever came second)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool, type(None))):
            # `? [a, b]` or a mapping as a key: YAML allows it, no protocol key is one, and dict() cannot hold it.
            raise yaml.constructor.ConstructorError(None, None, f"a key must be a plain value, not a "
                                                    f"{type(key).__name__}", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


# Values a protocol may hold once YAML aliases are expanded; the largest shipped protocol has a few hundred.
MAX_VALUES = 100_000


def _too_large(data: Any, limit: int = MAX_VALUES) -> bool:
    """Whether `data`, with every alias expanded, holds more than `limit` values. Aliases share one object, so
    nine nested levels of ten (`&a1 [*a0, *a0, ...]`) are a few lines of YAML and 10**9 values to anything that
    walks them (an error message's repr ran out of memory); the walk stops at the limit, so it costs at most that."""
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def _parse_yaml(text: str, where: str) -> Any:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BenchError(f"{where}: malformed YAML{at}: {problem}") from None
    except RecursionError:  # nesting deeper than the parser goes
        raise BenchError(f"{where}: malformed YAML: nested too deeply") from None
    if _too_large(data):
        raise BenchError(f"{where}: holds more than {MAX_VALUES:,} values once its YAML aliases are expanded; a "
                         "protocol is a few hundred")
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str], where: str) -> dict[str, Any]:
    """`--set a.b.c=VALUE` on the parsed protocol: dotted keys, entries addressed by name
    (`entries.dcgan.train.steps=10`), VALUE read as YAML (`evaluation.seeds=[0, 1]`)."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--set {item!r}: expected KEY=VALUE, e.g. entries.dcgan.train.steps=10")
        value = _parse_yaml(value_text, f"--set {key}")
        parts = key.strip().split(".")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):  # entries, by name
                match = [e for e in node if isinstance(e, dict) and e.get("name") == part]
                if not match:
                    names = ", ".join(str(e.get("name")) for e in node if isinstance(e, dict))
                    raise BenchError(f"--set {key}: no entry named '{part}' in {where}; entries: {names}")
                node = match[0]
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, (dict, list)):
                    raise BenchError(f"--set {key}: '{'.'.join(parts[:i + 1])}' is a value, not a section")
        if isinstance(node, list):
            raise BenchError(f"--set {key}: address an entry by name, e.g. entries.<name>.train.steps")
        node[parts[-1]] = value
    return raw


def load_protocol(path: str | Path, overrides: list[str] | None = None) -> LoadedProtocol:
    """Read, check and resolve a protocol file; `overrides` (`--set KEY=VALUE`) are applied before checking,
    and the text kept for the record is then the overridden protocol, with the overrides noted on top."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"{path}: protocol file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot read protocol ({exc})") from None
    raw = _parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise BenchError(f"{path}: a protocol is a YAML mapping with keys {', '.join(Protocol.model_fields)}")
    if overrides:
        raw = apply_overrides(raw, overrides, str(path))
        # Only where runs are logged (`--uri`) changes nothing measured: the file itself stays the record, comments
        # and all, and no machine's store path is written into it.
        if not all(o.split("=", 1)[0].strip().startswith("tracking.") for o in overrides):
            text = (f"# {path.name} with --set {' --set '.join(overrides)}\n"
                    + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    raw = lift_metric_settings(raw, str(path))
    try:
        protocol = Protocol.model_validate(raw)
    except ValidationError as exc:
        raise BenchError(f"{path}: {describe_validation_error(exc)}") from None
    check_references(protocol, str(path))
    return LoadedProtocol(protocol, path, text)


def declared_settings() -> dict[str, Any]:
    """Flat evaluation key -> the registered metric that declares it (Metric.settings)."""
    from bench.metrics import METRICS

    return {key: m for m in METRICS.values() if m.settings is not None for key in m.settings.model_fields}


def lift_metric_settings(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Move the flat evaluation keys that registered metrics declare into `evaluation.metric_settings`, each
    checked by its metric's settings model; every other key is left to the schema (unknown ones refused)."""
    ev = raw.get("evaluation")
    if not isinstance(ev, dict):
        return raw
    declared = declared_settings()
    builtin = set(EvaluationSpec.model_fields)
    lifted = {k: ev[k] for k in ev if k in declared and k not in builtin}
    if not lifted:
        return raw
    values: dict[str, Any] = {}
    for metric in {id(declared[k]): declared[k] for k in lifted}.values():
        mine = {k: v for k, v in lifted.items() if declared[k] is metric}
        try:
            values.update(metric.settings.model_validate(mine).model_dump(include=set(mine)))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise BenchError(f"{where}: evaluation.{err['loc'][0]}: {err['msg']} (metric {metric.name})") from None
    ev = {k: v for k, v in ev.items() if k not in lifted}
    ev["metric_settings"] = {**(ev.get("metric_settings") or {}), **values}
    return {**raw, "evaluation": ev}


def describe_validation_error(exc: ValidationError) -> str:
    """The first pydantic error as one sentence a person can act on."""
    # A misspelt key shows up twice: as an unknown key and as the real key missing. Name the typo.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = [p for p in err["loc"]]
    where = _format_loc(loc[:-1] if err["type"] == "extra_forbidden" else loc) or "top level"
    if err["type"] == "extra_forbidden":
        owner = _model_at(Protocol, loc[:-1])
        valid = sorted(owner.model_fields)
        if owner is EvaluationSpec:  # the flat keys registered metrics declare are valid here too
            valid = sorted({*valid, *declared_settings()} - {"metric_settings"})
        return f"unknown key '{loc[-1]}' in {where}; valid keys: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"missing required key '{loc[-1]}' in {_format_loc(loc[:-1]) or 'top level'}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg} (got {err.get('input')!r})" if "input" in err and not isinstance(
        err.get("input"), dict) else f"{where}: {msg}"


def _format_loc(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: list[Any]) -> type[BaseModel]:
    """Walk field annotations along a pydantic error location to the model that owns the bad key."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        ann = current.model_fields[part].annotation
        # Unwrap Optional[...] and list[...] down to the nested model class.
        while not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if not args:
                break
            ann = args[0]
        current = ann
    return current


# dataset option -> the data sets whose loader reads it
OPTION_SETS = {
    "center_crop": {"celeba", "image_folder"},
    "label_nc": {"cityscapes", "labelmap"},
    "instance": {"cityscapes", "labelmap"},
    "scale": {"facades_sr", "superres"},
    "ab_half": {"facades_sr", "superres"},
    "aspect": {"cityscapes", "labelmap"},  # only label maps are read as whole non-square frames
}


def check_references(protocol: Protocol, where: str) -> None:
    """Names that pydantic cannot know: zoo entries, their config keys, metrics and extractors."""
    # Imported here so `bench validate` on a broken file fails fast without importing torch models.
    from bench.features.extractors import check_extractor_name
    from bench.metrics import METRICS
    from bench.data import DATASETS

    DATASETS.get(protocol.dataset.name)
    from bench.data.translation import PAIRED_DEFAULTS, UNPAIRED_DEFAULTS

    ds = protocol.dataset
    jitter = {*PAIRED_DEFAULTS, *UNPAIRED_DEFAULTS, "facades_sr", "superres"}
    if ds.load_size is not None and ds.name not in jitter:
        raise BenchError(f"{where}: dataset.load_size (training jitter) applies to {', '.join(sorted(jitter))} only")
    if ds.direction != "AtoB" and ds.name not in PAIRED_DEFAULTS:
        raise BenchError(f"{where}: dataset.direction applies to paired data sets only")
    # Options that only some loaders read: set on another data set they would be silently ignored.
    for key, names in OPTION_SETS.items():
        if getattr(ds, key) != DatasetSpec.model_fields[key].default and ds.name not in names:
            raise BenchError(f"{where}: dataset.{key} applies to {', '.join(sorted(names))} only, "
                             f"not '{ds.name}'")
    for i, entry in enumerate(protocol.entries):
        resolved_config(entry, f"{where}: entries[{i}].config")
    check_frames(protocol, where)
    for name in protocol.evaluation.metrics:
        METRICS.get(name)
    from bench.metrics import KEY_DIRECTION

    for i, claim in enumerate(protocol.literature):
        if claim.metric not in KEY_DIRECTION:
            raise BenchError(f"{where}: literature[{i}]: metric '{claim.metric}' has no known direction; use one of: "
                             + ", ".join(sorted(KEY_DIRECTION)))
    # What each entry's family can feed is declared on the class, so `bench validate` refuses an inapplicable
    # metric without data or a built model (preflight checks again with the data's labels).
    from bench.metrics.base import check_applicable, inputs_of
    from zoo import ZOO

    check_applicable(protocol.evaluation.metrics,
                     {f"{e.name} ({e.zoo})": inputs_of(ZOO.get(e.zoo)) for e in protocol.entries}, METRICS, where)
    check_init_from(protocol, where)
    unknown = sorted(set(protocol.evaluation.metric_settings) - set(declared_settings()))
    if unknown:
        raise BenchError(f"{where}: evaluation.metric_settings: '{unknown[0]}' is no registered metric's setting")
    check_extractor_name(protocol.evaluation.extractor, protocol.dataset.name, protocol.dataset.channels)


def check_frames(protocol: Protocol, where: str) -> None:
    """dataset.aspect != 1 (whole non-square frames) only with families that declare they can train and translate
    them (zoo.base.FrameTranslator); every other family generates and reads square images."""
    from zoo import ZOO
    from zoo.base import FrameTranslator

    if protocol.dataset.aspect == 1:
        return
    for entry in protocol.entries:
        if not issubclass(ZOO.get(entry.zoo), FrameTranslator):
            able = sorted(n for n, cls in ZOO.items() if isinstance(cls, type) and issubclass(cls, FrameTranslator))
            raise BenchError(f"{where}: entries[{entry.name}]: zoo entry '{entry.zoo}' reads square images only, so "
                             f"it cannot take dataset.aspect {protocol.dataset.aspect} (whole frames); "
                             f"{', '.join(able)} can")


def check_init_from(protocol: Protocol, where: str) -> None:
    """`train.init_from` names an earlier entry that trains under the same training seeds, and the starting
    family declares that it can take another entry's weights (zoo.base.WarmStart)."""
    from zoo import ZOO
    from zoo.base import WarmStart

    seen = {}
    for entry in protocol.entries:
        source = entry.train.init_from if entry.train else None
        if source is not None:
            here = f"{where}: entries[{entry.name}].train.init_from"
            if source == entry.name:
                raise BenchError(f"{here}: names this entry itself; name an entry listed before it")
            if source not in seen:
                later = any(e.name == source for e in protocol.entries)
                raise BenchError(f"{here}: '{source}' is {'a later entry' if later else 'no entry'}; it must name "
                                 "an entry listed before this one")
            if seen[source].train is None:
                raise BenchError(f"{here}: '{source}' loads a checkpoint instead of training; name a trained entry")
            if protocol.train_seeds_of(seen[source]) != protocol.train_seeds_of(entry):
                raise BenchError(f"{here}: '{source}' trains under other training seeds; each run starts from the "
                                 "run of the same seed")
            if not issubclass(ZOO.get(entry.zoo), WarmStart):
                raise BenchError(f"{here}: zoo entry '{entry.zoo}' cannot start from another entry's weights")
        seen[entry.name] = entry


def resolved_config(entry, where: str = "config") -> Any:
    """The entry's typed family Config (defaults filled in), parsed once and kept on the entry: the
    fingerprint, preflight, training and export all read this object, never the raw dict again."""
    from zoo import ZOO
    from zoo.base import parse_config

    cached = getattr(entry, "_resolved", None)  # a loaded EntrySpec caches it; a plain stand-in parses each time
    if cached is None:
        cached = parse_config(ZOO.get(entry.zoo).Config, entry.config, where)
        if isinstance(entry, EntrySpec):
            entry._resolved = cached
    return cached


def canonical(protocol: Protocol) -> dict[str, Any]:
    """The resolved protocol minus what cannot change a score.

    `tracking` (where results are logged) and `dataset.root` (where files happen to live) are left
    out: the data's content hash stands in for the folder, so the same data in another folder gives
    the same fingerprint, and a changed file gives a different one.
    """
    import dataclasses

    d = protocol.model_dump(mode="json")
    # The device type a run resolves to (cpu, cuda) enters the fingerprint on its own; the literal setting
    # (auto, cpu, cuda) would only split identical scores (`--device cpu` on a CPU-only machine vs auto). It is
    # written as its default so that every earlier fingerprint, made with the default, is kept.
    d["device"] = Protocol.model_fields["device"].default
    d.pop("tracking", None)
    d.pop("control", None)  # which entry reports test the others against: a reading of the scores, not a score
    d.pop("literature", None)  # what papers report about the entries: checked against the scores, not one of them
    d["dataset"].pop("root", None)
    d["evaluation"].pop("weights", None)  # the weights' sha256 enters the fingerprint instead
    d["evaluation"].pop("batch_size", None)  # scores do not depend on it (tested), only speed and memory
    # Whether the real-data row is added changes no entry's score, and the row's own scores depend only on what
    # the fingerprint holds (data, evaluation seeds and sizes, extractor): on or off, one fingerprint.
    d["evaluation"].pop("reference", None)
    # Declared metric settings count as the flat keys the YAML wrote, and only away from their defaults: a
    # metric's new setting, left alone, must not change any earlier fingerprint.
    declared = declared_settings()
    for key, value in sorted(d["evaluation"].pop("metric_settings", {}).items()):
        if key in declared and value != declared[key].settings.model_fields[key].default:
            d["evaluation"][key] = value
    ex = d["evaluation"]["extractor"]
    if ex == f"judge:{protocol.dataset.name}":
        d["evaluation"]["extractor"] = "judge"  # the same extractor under two spellings
    # Training seeds, resolved per entry (the protocol's list, or the entry's own) as a sorted set: the order
    # only changes the order of the runs. Unset stays absent, so every earlier fingerprint is kept.
    d.pop("train_seeds", None)
    for raw, entry in zip(protocol.entries, d["entries"]):
        seeds = protocol.train_seeds_of(raw)
        entry.pop("train_seeds", None)
        if seeds != [None]:
            entry["train_seeds"] = sorted(seeds)
        # Every config value, defaults included: a changed family default must change the fingerprint,
        # and `{}` vs the defaults written out must not.
        from zoo.base import config_record

        entry["config"] = config_record(resolved_config(raw))  # later-added options count only when set
        if entry.get("checkpoint"):
            entry["checkpoint"] = True  # the file's sha256 enters the fingerprint, not its path
        train = entry.get("train") or {}
        if train.get("patience"):  # early stopping changes the weights: what it watches counts too
            train["patience_monitor"] = {"eval_every": train["eval_every"], "eval_n": train["eval_n"]}
        for key in ("log_every", "checkpoint_every", "sample_every", "keep_last", "eval_every", "eval_n"):
            # bookkeeping, not scores
            train.pop(key, None)
        for key, default in LATER_TRAIN_KEYS.items():
            if train.get(key, default) == default:
                train.pop(key, None)
    # Keys added to the schema after protocols were first fingerprinted enter the fingerprint only when
    # set away from their default: adding an option must not orphan every earlier run and baseline.
    for section, defaults in LATER_KEYS.items():
        for key, default in defaults.items():
            if d[section].get(key, default) == default:
                d[section].pop(key, None)
    d["protocol_version"] = PROTOCOL_VERSION
    return d


# The extractor preprocessing of every fingerprint made before the preprocessing version entered it.
_FIRST_PREPROCESSING = "uint8-v1"

# entries[].train keys added after the first fingerprinted protocols: {key: default}.
LATER_TRAIN_KEYS = {"patience": 0, "init_from": None, "fused_adam": False, "gemm_convs": False}

# section -> {key: default} of the schema keys added after the first fingerprinted protocols.
LATER_KEYS = {
    "dataset": {"center_crop": None, "label_nc": None, "instance": None, "scale": None, "ab_half": None,
                "domain_sizes": "train_size", "colourise": False, "aspect": 1},
    "evaluation": {"ppl_samples": 1000, "truncation_psis": [0.5, 0.7, 1.0]},
}


def fingerprint(protocol: Protocol, data_fingerprint: str, extractor_sha256: str,
                checkpoints: dict[str, str] | None = None, device_type: str = "cpu",
                segmenters: dict[str, str] | None = None, world_size: int = 1) -> str:
    """sha256 of the canonical protocol + data content + extractor weights + device type + interval
    method (+ loaded checkpoints' sha256, the semantic networks' identities, the data-parallel world size).
    CPU and CUDA kernels differ numerically, so scores from the two are never pooled; an interval is a result,
    so runs whose intervals were computed by different methods never share a fingerprint either. The parts
    added later enter only when present, so every earlier fingerprint is kept."""
    from bench.features.extractors import PREPROCESSING_VERSION

    parts = {"protocol": canonical(protocol), "data": data_fingerprint, "extractor": extractor_sha256,
             "device": device_type, "intervals": interval_method}
    if checkpoints:
        # An entry that loads a checkpoint is scored on that file's content, not on its path.
        parts["checkpoints"] = checkpoints
    if segmenters:
        # role -> a shipped S's sha256 (bench/features/segmenter.py `fingerprint_part`): seg_agreement is read by
        # the judge S, and L_sem trains against the training S, so another network is another score.
        parts["segmenters"] = segmenters
    if world_size > 1:
        # `--nproc N` / torchrun: BatchNorm statistics are per rank (batch / N images), a different algorithm
        # from one process, as another batch size would be.
        parts["world_size"] = world_size
    if PREPROCESSING_VERSION != _FIRST_PREPROCESSING:
        # How images are brought to an extractor's input: bumped when those pixels could change.
        parts["preprocessing"] = PREPROCESSING_VERSION
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
