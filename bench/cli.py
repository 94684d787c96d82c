"""Command line: wiring only. Problems a user can fix print one line and exit 2 (traceback with --debug)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from bench.errors import BenchError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Train and score GANs with fingerprinted protocols.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train/load every entry of a protocol, score it, log to MLflow")
    run.add_argument("protocol")
    run.add_argument("--workdir", default="runs", help="checkpoints, sample grids and results.jsonl (default: runs)")
    run.add_argument("--resume", action="store_true", help="continue from each entry's latest.pt")
    run.add_argument("--nproc", type=int, default=1,
                     help="data-parallel processes on this machine (re-launches itself under torchrun)")

    val = sub.add_parser("validate", help="check protocol files without running them")
    val.add_argument("protocols", nargs="+")

    zoo = sub.add_parser("zoo", help="the model zoo")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    zsub.add_parser("list", help="every entry with family, task, seed section and parameter counts")
    ins = zsub.add_parser("inspect", help="layer shapes and parameter counts of one entry")
    ins.add_argument("entry")
    ins.add_argument("overrides", nargs="*", metavar="key=value")
    ins.add_argument("--channels", type=int, default=None, help="image channels (default: the family's natural one)")

    ex = sub.add_parser("export-samples", help="write an entry's seeded samples and the real eval split as PNGs")
    ex.add_argument("protocol")
    ex.add_argument("--entry", required=True)
    ex.add_argument("--out", required=True, help="new folder; gets fake/, real/ and export.json")
    ex.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the protocol's first)")
    ex.add_argument("--workdir", default="runs", help="where `bench run` put its checkpoints")
    ex.add_argument("--checkpoint", default=None, help="export from this checkpoint instead")

    perf = sub.add_parser("perf", help="benchmark commands that print ratios")
    psub = perf.add_subparsers(dest="perf_command", required=True)
    pm = psub.add_parser("metrics", help="P1 metric overhead, P2 cache speed-up vs torch-fidelity, P4 memory")
    pm.add_argument("--extractor", action="append", default=None,
                    help="judge and/or inception-v3-compat (default: both)")
    pm.add_argument("--n", type=int, default=2000, help="fakes for P1/P2 with the judge")
    pm.add_argument("--inception-n", type=int, default=200, help="fakes for P1/P2 with Inception (slow on CPU)")
    pm.add_argument("--rss-n", type=int, nargs=2, default=[1000, 20000], metavar=("SMALL", "LARGE"))
    pm.add_argument("--inception-rss-n", type=int, nargs=2, default=[100, 400], metavar=("SMALL", "LARGE"))
    pm.add_argument("--inception-weights", default=None, help="pretrained file; default: stand-in weights")

    w = sub.add_parser("weights", help="pretrained files used by metrics (manifest)")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wsub.add_parser("list", help="the manifest, and whether each file is present")
    wsub.add_parser("verify", help="check the sha256 of every manifest file present locally")
    f = wsub.add_parser("fetch", help="download a manifest file (online only) into $BENCH_WEIGHTS_DIR or torch's cache")
    f.add_argument("name")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(message)s")
    try:
        return _dispatch(args)
    except BenchError as exc:
        if args.debug:
            raise
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    if args.command == "validate":
        from bench.protocol import load_protocol

        for path in args.protocols:
            loaded = load_protocol(path)
            print(f"{path}: ok ({loaded.protocol.name}, {len(loaded.protocol.entries)} entries)")
        return 0
    if args.command == "run":
        return _run(args)
    if args.command == "zoo":
        return _zoo(args)
    if args.command == "weights":
        return _weights(args)
    if args.command == "perf":
        from bench.perf import format_report, perf_metrics

        for name in args.extractor or ["judge", "inception-v3-compat"]:
            if name == "inception-v3-compat":
                r = perf_metrics(name, args.inception_n, *args.inception_rss_n, weights=args.inception_weights)
            else:
                r = perf_metrics(name, args.n, *args.rss_n)
            print(format_report(r), flush=True)
        return 0
    if args.command == "export-samples":
        from bench.export import export_samples
        from bench.protocol import load_protocol

        info = export_samples(load_protocol(args.protocol), args.entry, Path(args.out), args.seed,
                              Path(args.workdir), args.checkpoint)
        print(f"wrote {info['fake']} generated and {info['real']} real images to {args.out} "
              f"(eval seed {info['eval_seed']}, fingerprint {(info['fingerprint'] or 'none: --checkpoint')[:12]})")
        return 0
    raise AssertionError(args.command)


def _run(args) -> int:
    from bench.pipeline import run_protocol
    from bench.protocol import load_protocol
    from bench.runner import distributed

    loaded = load_protocol(args.protocol)  # checked once here, before any process is started
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        return _torchrun(args)
    if args.nproc < 1:
        raise BenchError(f"--nproc must be at least 1, got {args.nproc}")
    try:
        summary = run_protocol(loaded, Path(args.workdir), resume=args.resume)
    finally:
        world = distributed.current()
        distributed.shutdown()
    if not world.is_main:
        return 0
    print(f"\n{loaded.protocol.name}  fingerprint {summary.fingerprint[:12]}  "
          f"(real features: cache {summary.real_cache})")
    print(summary.table)
    from bench.tracking.mlflow_tracker import resolve_uri

    uri = resolve_uri(loaded.protocol.tracking.uri)
    print(f"\nresults: {Path(args.workdir) / 'results.jsonl'}   MLflow run {summary.parent_run_id} in {uri}")
    if uri.startswith("sqlite:"):
        print(f"browse: mlflow ui --backend-store-uri {uri}")
    return 0 if all(r["status"] == "FINISHED" for r in summary.results) else 1


def _torchrun(args) -> int:
    """`bench run --nproc N` = `torchrun --standalone --nproc_per_node N -m bench run ...` (one node)."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "bench"] + (["--debug"] if args.debug else []) + ["run", args.protocol, "--workdir", args.workdir]
    if args.resume:
        cmd.append("--resume")
    return subprocess.call(cmd)


def _zoo(args) -> int:
    from zoo import ZOO
    from zoo.base import DataSpec, buffer_count

    if args.zoo_command == "list":
        print(f"{'entry':<11} {'task':<14} {'G params':>10} {'D params':>10}  seed section / summary")
        for name, family in ZOO.items():
            model = family.build({}, DataSpec("default", 28, 1, 10))
            p = model.card()["params"]
            print(f"{name:<11} {family.task:<14} {p.get('G', 0):>10,} {p.get('D', 0):>10,}  "
                  f"{family.seed_section}\n{'':<11} {family.summary}")
        return 0
    family = ZOO.get(args.entry)
    overrides = {}
    for item in args.overrides:
        if "=" not in item:
            raise BenchError(f"override '{item}' is not key=value")
        k, v = item.split("=", 1)
        overrides[k] = v
    channels = 1 if args.channels is None else args.channels
    model = family.build(overrides, DataSpec("inspect", 28, channels, 10), where=f"{args.entry} overrides")
    card = model.card()
    print(f"{args.entry}: {family.summary}\nseed section: {family.seed_section}\nconfig: {card['config']}")
    for net, rows in model.inspect().items():
        module = model.modules()[net]
        print(f"\n{net}: {card['params'][net]:,} trainable parameters, {buffer_count(module):,} buffers")
        print(f"  {'layer':<16} {'type':<18} {'output shape':<18} {'params':>10}")
        for path, kind, shape, n in rows:
            print(f"  {path:<16} {kind:<18} {'x'.join(map(str, shape)):<18} {n:>10,}")
    return 0


def _weights(args) -> int:
    from bench.features import weights

    if args.weights_command == "list":
        for name, entry in weights.manifest().items():
            present = next((str(p) for p in weights.candidates(entry) if p.is_file()), "missing")
            print(f"{name}: {entry.file}  sha256 {entry.digest_text()}\n  used by: {entry.used_by}\n"
                  f"  source: {entry.source}\n  local: {present}")
        return 0
    if args.weights_command == "verify":
        bad = 0
        for name, entry in weights.manifest().items():
            present = [p for p in weights.candidates(entry) if p.is_file()]
            if not present:
                print(f"{name}: missing ({entry.file})")
                continue
            for p in present:
                from bench.io import sha256_file

                digest = sha256_file(p)
                ok = entry.matches(digest)
                bad += not ok
                print(f"{name}: {'ok' if ok else 'MISMATCH'} {p} sha256 {digest}"
                      + ("" if ok else f" (expected {entry.digest_text()})"))
        return 1 if bad else 0
    path, digest = weights.resolve(args.name, allow_download=True)
    print(f"{args.name}: {path} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
