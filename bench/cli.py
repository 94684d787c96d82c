"""Command line: wiring only. Problems a user can fix print one line and exit 2 (traceback with --debug)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from bench.errors import BenchError, Terminated, die_of_sigterm, error_line, one_line, sigterm_as_interrupt


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="bench", description="Train and score GANs with fingerprinted protocols.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train/load every entry of a protocol, score it, log to MLflow")
    run.add_argument("protocol")
    run.add_argument("--workdir", default="runs", help="checkpoints, sample grids and results.jsonl (default: runs)")
    run.add_argument("--resume", action="store_true", help="continue from each entry's latest.pt")
    run.add_argument("--nproc", type=_at_least(1, 1024), default=1,
                     help="data-parallel processes on this machine (re-launches itself under torchrun)")
    run.add_argument("--dry-run", action="store_true",
                     help="check the data, weights and checkpoints and print the fingerprint and the decoded "
                          "data's sha256; train, score and log nothing")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one protocol key before it is checked, e.g. entries.dcgan.train.steps=10 or "
                          "evaluation.seeds=[0] (repeatable; entries by name; VALUE is YAML)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="shorthand for --set device=...")
    run.add_argument("--uri", help="MLflow tracking URI (shorthand for --set tracking.uri=...)")
    sw = run.add_argument_group("sweeps: each (entry, training seed) as its own job (bench/sweep.py; always resumes)")
    sw.add_argument("--jobs", type=_at_least(1, 100000), default=None,
                    help="units in flight at once (local default 1; Ray/Slurm default: all the executor takes)")
    sw.add_argument("--executor", choices=["local", "ray", "slurm", "submitit-local"], default=None,
                    help="local processes (default with --jobs), Ray tasks, or Slurm jobs via submitit")
    sw.add_argument("--address", default=None, metavar="HOST:PORT",
                    help="Ray cluster to join (default: start an embedded local one)")
    sw.add_argument("--threads", type=_at_least(1, 4096), default=None,
                    help="torch threads per unit (default: this process's; training is bit-exact per thread count)")
    sw.add_argument("--gpus-per-job", type=_fraction_of_gpus, default=0.0, help="GPUs each Ray task or Slurm job asks for")
    sw.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                    help="a submitit/Slurm option, e.g. partition=gpu, timeout_min=600, mem_gb=32 (repeatable)")

    val = sub.add_parser("validate", help="check protocol files without running them")
    val.add_argument("protocols", nargs="+")

    zoo = sub.add_parser("zoo", help="the model zoo")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    zsub.add_parser("list", help="every entry with family, task, source and parameter counts")
    ins = zsub.add_parser("inspect", help="layer shapes and parameter counts of one entry")
    ins.add_argument("entry")
    ins.add_argument("overrides", nargs="*", metavar="key=value")
    ins.add_argument("--channels", type=_at_least(1, 4), default=None, help="image channels (default: the family's natural one)")

    ex = sub.add_parser("export-samples", help="write an entry's seeded samples and the real eval split as PNGs")
    ex.add_argument("protocol")
    ex.add_argument("--entry", required=True)
    ex.add_argument("--out", required=True, help="new folder; gets fake/, real/ and export.json")
    ex.add_argument("--seed", type=_eval_seed, default=None, help="evaluation seed (default: the protocol's first)")
    ex.add_argument("--nproc", type=_at_least(1), default=1,
                    help="the --nproc the run was made with (it is part of the run's fingerprint and folder)")
    ex.add_argument("--workdir", default="runs", help="where `bench run` put its checkpoints")
    ex.add_argument("--checkpoint", default=None, help="export from this checkpoint instead")

    perf = sub.add_parser("perf", help="benchmark commands that print ratios")
    psub = perf.add_subparsers(dest="perf_command", required=True)
    pm = psub.add_parser("metrics", help="P1 metric overhead, P2 cache speed-up vs torch-fidelity, P4 memory")
    pm.add_argument("--extractor", action="append", default=None,
                    help="judge and/or inception-v3-compat (default: both)")
    pm.add_argument("--n", type=_at_least(2, 10**7), nargs="+", default=[2000, 10000], help="fakes for P1/P2 with the judge")
    pm.add_argument("--inception-n", type=_at_least(2, 10**7), nargs="+", default=[16],
                    help="fakes for P1/P2 with Inception (about 6 images/s on 2 CPU cores)")
    pm.add_argument("--repeats", type=_at_least(1, 1000), default=3, help="timings per N (min/median/max are printed)")
    pm.add_argument("--rss-n", type=_at_least(2, 10**7), nargs=2, default=[1000, 20000], metavar=("SMALL", "LARGE"))
    pm.add_argument("--inception-rss-n", type=_at_least(2, 10**7), nargs=2, default=[None, None], metavar=("SMALL", "LARGE"),
                    help="also measure P4 with Inception at these sizes (off by default: at any N a CPU can "
                         "extract in minutes its peak RSS is the network's; docs/metrics.md)")
    pm.add_argument("--inception-weights", default=None, help="pretrained file; default: stand-in weights")
    ps = psub.add_parser("scale", help="training and evaluation throughput of `bench run --nproc N` for each N")
    ps.add_argument("--nproc", type=_at_least(1, 1024), nargs="+", default=[1, 2])
    ps.add_argument("--steps", type=_at_least(1, 10**7), default=300, help="training steps per entry of the built-in protocol")
    ps.add_argument("--n", type=_at_least(2, 10**7), default=4000, help="evaluation samples of the built-in protocol")
    ps.add_argument("--protocol", default=None, help="time this protocol instead of the built-in one")

    pt = psub.add_parser("train", help="the shared runner's DCGAN and pix2pix steps vs the reference scripts'")
    pt.add_argument("--dcgan-ref", default=None, metavar="PATH", help="a checkout of pytorch/examples")
    pt.add_argument("--pix2pix-ref", default=None, metavar="PATH",
                    help="a checkout of junyanz/pytorch-CycleGAN-and-pix2pix (its requirements installed: dominate)")
    pt.add_argument("--facades", default=None, metavar="PATH",
                    help="facades pairs for pix2pix (a folder with train/); default $BENCH_DATA/facades")
    pt.add_argument("--models", nargs="+", choices=["dcgan", "pix2pix"], default=["dcgan", "pix2pix"])
    pt.add_argument("--steps", type=_at_least(2, 10**6), default=20, help="timed steps per side and repeat")
    pt.add_argument("--warmup", type=_at_least(0, 10**6), default=3, help="steps dropped before timing")
    pt.add_argument("--repeats", type=_at_least(1, 1000), default=3)
    pt.add_argument("--threads", type=_at_least(1, 4096), default=None, help="torch threads on both sides (default: this process's)")
    pw = psub.add_parser("sweep", help="units/hour of `bench run --jobs J` for each J (J jobs of cores/J threads)")
    pw.add_argument("--jobs", type=_at_least(1, 1024), nargs="+", default=[1, 2])
    pw.add_argument("--cores", type=_at_least(1, 4096), default=None, help="cores to share among the jobs (default: all)")
    pw.add_argument("--steps", type=_at_least(1, 10**7), default=300, help="training steps per unit of the built-in protocol")
    pw.add_argument("--n", type=_at_least(2, 10**7), default=2000, help="evaluation samples per seed of the built-in protocol")
    pw.add_argument("--protocol", default=None, help="time this protocol instead of the built-in one")
    pw.add_argument("--executor", choices=["local", "ray", "submitit-local"], default="local")

    pc = psub.add_parser("coverage", help="simulated coverage of the FID and KID 95%% intervals (Gaussian features "
                                          "with known answers); exit 1 if a cell is outside [90%%, 99%%]")
    pc.add_argument("--draws", type=_at_least(1, 10**6), default=200, help="simulated draws per cell")
    pc.add_argument("--dims", type=_at_least(1, 8192), nargs="+", default=[128, 2048])
    pc.add_argument("--n", type=_at_least(20, 10**6), nargs="+", default=[500, 1000, 2000, 5000, 10000], help="generated samples")
    pc.add_argument("--n-real", type=_at_least(20, 10**6), default=10000)
    pc.add_argument("--populations", nargs="+", default=["far", "near", "same"], choices=["far", "near", "same"])
    pc.add_argument("--metrics", nargs="+", default=["fid", "kid"], choices=["fid", "kid"])
    pc.add_argument("--json", default=None, help="also write every cell as JSON here")
    pc.add_argument("--log", default=None,
                    help="append every simulated draw to this JSONL file and resume from it: an interrupted grid "
                         "continues after its last logged draw with the same numbers an uninterrupted run gives")
    pc.add_argument("--first-draw", type=_at_least(0, 10**6), default=0, metavar="K",
                    help="compute only draws K .. DRAWS-1 of each cell, the same draws a whole run makes there (the "
                         "generator is replayed through the earlier ones): split a cell between processes or "
                         "machines with --log, then one run over the concatenated logs gives the whole cell")
    pc.add_argument("--jobs", type=_at_least(1, 1024), default=1, metavar="J",
                    help="split each cell's draws between J one-thread processes side by side, each appending to the "
                         "log (a temporary one without --log); the cell is then read back whole from it, with the "
                         "numbers one process gives. At d = 2,048 two one-thread pieces make about twice the draws "
                         "an hour of one two-thread process")
    pc.add_argument("--spread", type=_at_least(0, 10**6), default=0, metavar="K",
                    help="after each cell, measure FID's sampling sd again on K fresh draws (point estimates only, "
                         "not logged; bench/coverage.py) and print what the cell's intervals would cover at it: "
                         "tells a too-narrow interval from a cell whose draws happened to spread widely")

    jg = sub.add_parser("judge", help="the shipped judge classifiers (pinned weights files)")
    jsub = jg.add_subparsers(dest="judge_command", required=True)
    jt = jsub.add_parser("train", help="retrain a shipped judge from scratch with its documented recipe "
                                       "(machine-dependent in the last bits: the shipped file is the identity)")
    jt.add_argument("dataset", help="mnist or cifar10, or a shipped semantic network S: "
                                    "segmenter:facades_sr:judge or segmenter:facades_sr:training")
    jt.add_argument("--out", default=None, help="where to write it (default: the shipped file's name in the current "
                                                "folder)")
    jt.add_argument("--device", type=_device, default="cpu")
    w = sub.add_parser("weights", help="pretrained files used by metrics (manifest)")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wsub.add_parser("list", help="the manifest, and whether each file is present")
    wsub.add_parser("verify", help="check the sha256 of every manifest file present locally")
    f = wsub.add_parser("fetch", help="download a manifest file (online only) into $BENCH_WEIGHTS_DIR or torch's cache")
    f.add_argument("name")

    lb = sub.add_parser("leaderboard", help="rank entries per protocol fingerprint from MLflow runs")
    lb.add_argument("targets", nargs="*", metavar="PROTOCOL_OR_EXPERIMENT",
                    help="protocol files or MLflow experiment names (default: every experiment in the store)")
    lb.add_argument("--uri", default=None, help="MLflow tracking URI (default: the first protocol's tracking.uri, "
                    "else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    lb.add_argument("--fingerprint", default=None, help="only this fingerprint (a prefix is enough)")
    lb.add_argument("--sort", default=None, help="metric key to rank by (default: fid if present)")
    lb.add_argument("--csv", default=None, metavar="FILE", help="also write every number as CSV")
    lb.add_argument("--markdown", default=None, metavar="FILE", help="also write Markdown")
    lb.add_argument("--html", default=None, metavar="FILE", help="also write an HTML page")
    lb.add_argument("--no-log", action="store_true",
                    help="do not attach leaderboard.{md,csv,html} to each fingerprint's newest protocol run")

    rp = sub.add_parser("report", help="write reports/<protocol>/index.html + README.md from MLflow")
    rp.add_argument("target", metavar="PROTOCOL_OR_RUN", help="protocol file (its newest run) or an MLflow run id")
    rp.add_argument("--out", default=None, help="folder (default: reports/<protocol name>)")
    rp.add_argument("--uri", default=None, help="MLflow tracking URI (default: the protocol's, else "
                    "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")

    ck = sub.add_parser("check", help="fail (exit 1) when a protocol run moved beyond its baseline's tolerance")
    ck.add_argument("protocol")
    ck.add_argument("--baseline", default=None, help="baseline JSON (default: reports/baselines/<protocol>.json)")
    ck.add_argument("--run", type=_run_id, default=None, help="MLflow run id to check (default: the protocol's newest run)")
    ck.add_argument("--rerun", action="store_true", help="score the protocol now (bench run), then check that run")
    ck.add_argument("--workdir", default="runs", help="with --rerun: checkpoints and results.jsonl (default: runs)")
    ck.add_argument("--uri", default=None, help="MLflow tracking URI to read (default: the protocol's)")
    ck.add_argument("--allow-improvement", action="store_true",
                    help="let metrics that improved beyond tolerance pass (else they are SUSPICIOUS and fail)")

    bl = sub.add_parser("baseline", help="regression baselines")
    blsub = bl.add_subparsers(dest="baseline_command", required=True)
    bu = blsub.add_parser("update", help="write a baseline JSON from a protocol run")
    bu.add_argument("protocol")
    bu.add_argument("--run", type=_run_id, default=None, help="MLflow run id (default: the protocol's newest finished run)")
    bu.add_argument("--out", default=None, help="file (default: reports/baselines/<protocol>.json)")
    bu.add_argument("--uri", default=None, help="MLflow tracking URI to read (default: the protocol's)")
    bu.add_argument("--rel", type=float, default=None, help="default relative tolerance (kept from the file, else 0.05)")
    bu.add_argument("--abs", type=float, default=None, help="default absolute tolerance (kept from the file, else 0)")

    st = sub.add_parser("stats", help="reference statistics files (pytorch-fid .npz: mu, sigma)")
    stsub = st.add_subparsers(dest="stats_command", required=True)
    stsub.add_parser("show", help="dimension, ||mu||, trace(sigma) and sha256 of a file").add_argument("file")
    ss = stsub.add_parser("save", help="write a folder's reference statistics (mu, sigma) as pytorch-fid's .npz")
    ss.add_argument("source", help="folder of images")
    ss.add_argument("out", help="the .npz file to write")
    _extractor_args(ss)

    sc = sub.add_parser("score", help="score folder A (generated) against folder B or B.npz statistics, "
                                      "as `fidelity --input1 A --input2 B`")
    sc.add_argument("a", help="folder of generated images")
    sc.add_argument("b", help="folder of reference images, or reference statistics (.npz: mu, sigma)")
    # the names are bench/score.py's METRICS (not imported here: the parser must not load torch);
    # tests/test_score.py checks that this help lists every one
    sc.add_argument("--metrics", default="fid,kid",
                    help="comma-separated, from: fid, kid, is, precision_recall, density_coverage (default fid,kid)")
    sc.add_argument("--kid-subsets", type=_at_least(1, 100000), default=100)
    sc.add_argument("--kid-subset-size", type=_at_least(2), default=1000)
    sc.add_argument("--seed", type=_seed, default=2020, help="KID subset seed (torch-fidelity's default, 2020)")
    sc.add_argument("--json", action="store_true", help="print the result as one JSON object")
    sc.add_argument("--workdir", default="runs", help="results.jsonl goes here (default runs/)")
    sc.add_argument("--uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else "
                                                "sqlite:///mlflow.db); experiment `score`")
    sc.add_argument("--no-log", action="store_true", help="print only: no results.jsonl line, no MLflow run")
    _extractor_args(sc)
    return p


def _extractor_args(parser) -> None:
    parser.add_argument("--extractor", default="inception-v3-compat",
                        help="feature space: inception-v3-compat (published numbers' space) or a shipped judge")
    parser.add_argument("--weights", default=None, help="extractor weights file (default: the weights manifest)")
    parser.add_argument("--weights-sha256", default=None, help="the sha256 that file must have")
    parser.add_argument("--batch-size", type=_at_least(1, 100000), default=50)
    parser.add_argument("--device", type=_device, default="cpu")


def _coverage(args) -> int:
    from tqdm import tqdm

    import tempfile

    from bench.coverage import (fid_spread, format_candidate, format_se_dispersion, format_spread, format_table,
                                simulate_cell, simulate_cell_in_pieces, verdict)
    from bench.io import atomic_write_bytes

    if args.spread < 0 or args.spread == 1:
        raise BenchError(f"--spread needs 0 (off) or at least 2 draws for a standard deviation, got {args.spread}")
    if args.draws < 2:
        raise BenchError(f"--draws needs at least 2 simulated draws per cell, got {args.draws}")
    if not 0 <= args.first_draw <= args.draws - 2:
        raise BenchError(f"--first-draw must leave at least 2 of the {args.draws} draws, got {args.first_draw}")

    cells = []
    which = f"draws {args.first_draw}-{args.draws - 1} of {args.draws}" if args.first_draw else f"{args.draws} draws"
    print(f"95% interval coverage over {which} per cell ({args.n_real} real vs N generated); "
          "FID@N is the target of the FID interval, MMD²(pop) that of the KID interval", flush=True)
    scratch = tempfile.TemporaryDirectory(prefix="bench-coverage-") if args.jobs > 1 and not args.log else None
    log = Path(args.log) if args.log else Path(scratch.name) / "draws.jsonl" if scratch else None
    for d in args.dims:
        for pop in args.populations:
            for n in args.n:
                if args.jobs > 1:
                    with tqdm(total=args.draws - args.first_draw, desc=f"{pop} d={d} N={n} ({args.jobs} jobs)",
                              unit="draw", leave=False, disable=None, dynamic_ncols=True) as bar:
                        def shown(done, bar=bar):
                            bar.update(done - bar.n)
                        cells.append(simulate_cell_in_pieces(pop, d, n, args.n_real, args.draws, args.jobs, log,
                                                             args.first_draw, tuple(args.metrics), progress=shown))
                else:
                    cells.append(simulate_cell(pop, d, n, args.n_real, args.draws, metrics=tuple(args.metrics),
                                               log=log, first_draw=args.first_draw))
                print(format_table(cells[-1:]).splitlines()[-1] if len(cells) > 1 else format_table(cells),
                      flush=True)
                if cells[-1].get("reformed_draws"):
                    print(f"  {cells[-1]['reformed_draws']} draws resumed from records of another FID rule: their "
                          "intervals formed by this one from each draw's logged variance parts", flush=True)
                if "fid" in cells[-1]:
                    print(format_se_dispersion(cells[-1]), flush=True)
                    beside = format_candidate(cells[-1])
                    if beside:
                        print(beside, flush=True)
                if args.spread and "fid" in cells[-1]:
                    with tqdm(total=args.spread, desc=f"spread {pop} d={d} N={n}", unit="draw", leave=False,
                              disable=None, dynamic_ncols=True) as bar:
                        cells[-1]["fid_spread"] = fid_spread(pop, d, n, args.n_real, args.spread,
                                                             progress=lambda i: bar.update(1))
                    print(format_spread(cells[-1], cells[-1]["fid_spread"]), flush=True)
    if scratch:
        scratch.cleanup()
    if args.json:
        atomic_write_bytes(Path(args.json), json.dumps(cells, indent=1).encode())
    verdicts = [verdict(c) for c in cells]
    print(f"{verdicts.count('ok')}/{len(cells)} cells inside [90%, 99%] with every estimate inside its interval; "
          f"{verdicts.count('conservative')} conservative (over 99%: degenerate or low-signal cells, see bench/coverage.py); "
          f"{verdicts.count('FAIL')} failed")
    return 1 if "FAIL" in verdicts else 0


def _judge(args) -> int:
    from bench.features.judge import shipped_file, train_shipped
    from bench.features.weights import manifest
    from bench.io import check_file_target

    if args.dataset.startswith("segmenter:"):
        from bench.features import segmenter

        _, dataset, role = (args.dataset.split(":") + ["", ""])[:3]
        if dataset not in segmenter.SHIPPED or role not in segmenter.ROLES:
            raise BenchError(f"no shipped segmenter '{args.dataset}'; valid: " + ", ".join(
                segmenter.shipped_name(d, r) for d in sorted(segmenter.SHIPPED) for r in segmenter.ROLES))
        out = Path(args.out or segmenter.shipped_file(dataset, role).name)
        check_file_target(out)  # before minutes of training, not after
        sha, meta = segmenter.train_shipped(dataset, role, out, args.device)
        shipped = manifest().get(args.dataset)
        same = "identical to" if sha == shipped.sha256 else "differs from"
        print(f"{out}: sha256 {sha}; held-out pixel accuracy {meta['heldout_pixel_accuracy']:.4f}, mIoU "
              f"{meta['heldout_miou']:.4f} on {meta['heldout_images']} images; trained on {meta['train_images']} "
              f"images; {same} the shipped {segmenter.shipped_file(dataset, role)} ({shipped.sha256[:12]})")
        return 0
    out = Path(args.out or f"judge-{args.dataset}.pt")
    check_file_target(out)  # before minutes of training, not after
    sha, meta = train_shipped(args.dataset, out, args.device)
    shipped = manifest().get(f"judge:{args.dataset}")
    same = "identical to" if sha == shipped.sha256 else "differs from"
    print(f"{out}: sha256 {sha}; held-out accuracy {meta['heldout_accuracy']:.4f} on {meta['heldout_size']} images; "
          f"trained on {meta['train_size']} images; {same} the shipped {shipped_file(args.dataset)} ({shipped.sha256[:12]})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(message)s")
    if not args.debug:
        from bench.tracking.mlflow_tracker import quiet_libraries

        quiet_libraries()
    try:
        with sigterm_as_interrupt():
            return _dispatch(args)
    except BenchError as exc:
        if args.debug:
            raise
        print(error_line(exc), file=sys.stderr)
        return 2
    except Terminated:  # its runs are marked KILLED on the way here, as for Ctrl-C
        print("bench: terminated (SIGTERM)", file=sys.stderr, flush=True)
        die_of_sigterm()
        return 128 + 15
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    if args.command == "validate":
        from bench.protocol.load import load_protocol

        failed = 0
        for path in args.protocols:  # every file is checked; each bad one gets its one line
            try:
                loaded = load_protocol(path)
            except BenchError as exc:
                print(error_line(exc), file=sys.stderr)
                failed += 1
                continue
            print(f"{path}: ok ({loaded.protocol.name}, {len(loaded.protocol.entries)} entries)")
        if failed and len(args.protocols) > 1:
            print(f"{failed} of {len(args.protocols)} protocol files have errors", file=sys.stderr)
        return 2 if failed else 0
    if args.command == "run":
        return _run(args)
    if args.command == "zoo":
        return _zoo(args)
    if args.command == "weights":
        return _weights(args)
    if args.command == "judge":
        return _judge(args)
    if args.command == "perf" and args.perf_command == "scale":
        from bench.perf import perf_scale

        print(perf_scale(args.nproc, args.steps, args.n, args.protocol), flush=True)
        return 0
    if args.command == "perf" and args.perf_command == "train":
        from bench.perf_train import perf_train

        print(perf_train(args.dcgan_ref, args.steps, args.warmup, args.repeats, args.threads, args.pix2pix_ref,
                         args.facades, tuple(args.models)), flush=True)
        return 0
    if args.command == "perf" and args.perf_command == "sweep":
        import os

        from bench.perf import perf_sweep

        print(perf_sweep(args.jobs, args.cores or os.cpu_count() or 1, args.steps, args.n, args.protocol,
                         args.executor), flush=True)
        return 0
    if args.command == "perf" and args.perf_command == "coverage":
        return _coverage(args)
    if args.command == "perf":
        import time

        from bench.perf import format_report, perf_metrics

        start = time.perf_counter()

        def progress(line: str) -> None:
            print(f"[perf {time.perf_counter() - start:5.0f}s] {line}", file=sys.stderr, flush=True)

        for name in args.extractor or ["judge", "inception-v3-compat"]:
            if name == "inception-v3-compat":
                r = perf_metrics(name, args.inception_n, *args.inception_rss_n, weights=args.inception_weights,
                                 repeats=args.repeats, progress=progress)
            else:
                r = perf_metrics(name, args.n, *args.rss_n, repeats=args.repeats, progress=progress)
            print(format_report(r), flush=True)
        print(f"bench perf metrics took {time.perf_counter() - start:.0f} s", flush=True)
        return 0
    if args.command == "leaderboard":
        return _leaderboard(args)
    if args.command == "report":
        return _report(args)
    if args.command == "check":
        return _check(args)
    if args.command == "baseline":
        return _baseline(args)
    if args.command == "stats":
        return _stats(args)
    if args.command == "score":
        return _score(args)
    if args.command == "export-samples":
        from bench.export import export_samples
        from bench.protocol.load import load_protocol

        info = export_samples(load_protocol(args.protocol), args.entry, Path(args.out), args.seed,
                              Path(args.workdir), args.checkpoint, args.nproc)
        print(f"wrote {info['fake']} generated and {info['real']} real images to {args.out} "
              f"(eval seed {info['eval_seed']}, fingerprint {(info['fingerprint'] or 'none: --checkpoint')[:12]})")
        return 0
    raise AssertionError(args.command)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported as every other bad input is: one line, exit 2 (argparse's own
    error printed its usage block first). Subcommand parsers are made of the same class."""

    def error(self, message: str):
        self.exit(2, f"bench: error: {self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def _at_least(low: int, high: Optional[int] = None):
    """An argparse type: an integer in [low, high] (a bad value is one line, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {value}")
        return value
    return parse


def _run_id(text: str) -> str:
    """An MLflow run id: `--run ""` silently meant the newest run."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an MLflow run id, not an empty string (leave --run out for the newest run)")
    return text.strip()


def _fraction_of_gpus(text: str) -> float:
    """GPUs per job: a finite number >= 0 (Ray takes fractions)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _seed(text: str) -> int:
    """A seed in [0, 2**32): what numpy's and torch's generators both take."""
    value = _at_least(0)(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"a seed must be below 2**32, got {value}")
    return value


def _eval_seed(text: str) -> int:
    """An evaluation seed as a protocol allows it: [0, 2**62)."""
    value = _at_least(0)(text)
    if value >= 2**62:
        raise argparse.ArgumentTypeError(f"an evaluation seed must be below 2**62, got {value}")
    return value


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: '{text}' (cpu, cuda, cuda:0, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"'{text}': no CUDA device on this machine")
    return text


def flag_overrides(args) -> list[str]:
    """`--set` overrides, then `--device` and `--uri` as overrides of their keys. Those two are plain strings:
    quoted, so a '#' or ':' in them is not read as YAML (a URI with ' #1' in it lost everything after the '#'
    as a comment and logged to another file)."""
    return list(args.overrides) + ([f"device={json.dumps(args.device, ensure_ascii=False)}"] if args.device else []) + (
        [f"tracking.uri={json.dumps(args.uri, ensure_ascii=False)}"] if args.uri else [])  # \u escapes split emoji


def _run(args) -> int:
    from bench.pipeline import run_protocol
    from bench.protocol.load import load_protocol
    from bench.runner import distributed

    overrides = flag_overrides(args)
    loaded = load_protocol(args.protocol, overrides)  # checked once here, before any process is started
    if args.dry_run:
        from bench.pipeline import dry_run

        fp, pixels = dry_run(loaded, max(1, args.nproc))  # a run with --nproc N > 1 scores under its own fingerprint
        print(f"{loaded.protocol.name}  fingerprint {fp[:12]}  (dry run: nothing trained, scored or logged)\n{fp}\n"
              f"decoded data sha256 {pixels}")
        return 0
    sweep = _sweep_of(args, overrides)
    if sweep is not None and (args.nproc > 1 or distributed.launched_by_torchrun()):
        raise BenchError("--jobs/--executor run units as separate jobs; --nproc/torchrun splits one model over "
                         "processes: use one or the other")
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        return _torchrun(args)
    from bench.sweep import UnitsUnfinished

    try:
        summary = run_protocol(loaded, Path(args.workdir), resume=args.resume, sweep=sweep)
    except UnitsUnfinished as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
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


def _sweep_of(args, overrides: list[str]):
    """The Sweep the sweep flags ask for, or None for a plain in-process run."""
    if args.jobs is None and args.executor is None and not (args.address or args.slurm or args.threads):
        return None
    from bench.sweep import Sweep

    slurm = {}
    for item in args.slurm:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--slurm {item}: expected KEY=VALUE, e.g. partition=gpu")
        slurm[key.strip()] = value.strip()
    return Sweep(jobs=args.jobs, executor=args.executor or "local", overrides=overrides, threads=args.threads,
                 address=args.address, slurm=slurm, gpus_per_job=args.gpus_per_job)


def _torchrun(args) -> int:
    """`bench run --nproc N` = `torchrun --standalone --nproc_per_node N -m bench run ...` (one node)."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "bench"] + (["--debug"] if args.debug else []) + ["run", args.protocol, "--workdir", args.workdir]
    if args.resume:
        cmd.append("--resume")
    for item in args.overrides:
        cmd += ["--set", item]
    cmd += (["--device", args.device] if args.device else []) + (["--uri", args.uri] if args.uri else [])
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except BaseException as exc:
        # Pass a stop on rather than SIGKILL torchrun (which orphaned its ranks with their runs RUNNING):
        # torchrun forwards SIGTERM to the ranks, which mark their MLflow runs KILLED; Ctrl-C reached them all
        # already (one process group). Then wait for them, killing only processes that do not end.
        if isinstance(exc, Terminated):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def _zoo(args) -> int:
    from zoo import ZOO
    from zoo.base import DataSpec, ExternalWeights, buffer_count

    import torch

    def build(family, overrides, channels, where="config"):
        # On the meta device: shapes and counts without allocating (pix2pixHD's G has 182M parameters).
        with torch.device("meta"):
            return family.build(overrides, DataSpec("default", 28, channels, 10), "meta", where=where)

    def natural_channels(family):
        return family.default_channels

    if args.zoo_command == "list":
        print(f"{'entry':<11} {'task':<14} {'G params':>12} {'D params':>10}  source / summary")
        for name, family in ZOO.items():
            if issubclass(family, ExternalWeights):  # its networks come from the user's file: no fixed counts
                g = d = "—"
            else:
                p = build(family, {}, natural_channels(family)).card()["params"]
                g, d = f"{p.get('G', 0):,}", f"{p.get('D', p.get('D_A', 0)):,}"
            print(f"{name:<11} {family.task:<14} {g:>12} {d:>10}  {family.seed_section}\n{'':<11} {family.summary}")
        return 0
    family = ZOO.get(args.entry)
    if issubclass(family, ExternalWeights):
        raise BenchError(f"zoo entry '{args.entry}' has no layers of its own: its network comes from the checkpoint "
                         "file an entry names (docs/zoo.md)")
    overrides = {}
    for item in args.overrides:
        if "=" not in item:
            raise BenchError(f"override '{item}' is not key=value")
        k, v = item.split("=", 1)
        overrides[k] = v
    channels = natural_channels(family) if args.channels is None else args.channels
    model = build(family, overrides, channels, where=f"{args.entry} overrides")
    card = model.card()
    print(f"{args.entry}: {family.summary}\nsource: {family.seed_section}\nconfig: {card['config']}")
    inspection = model.inspect()
    if getattr(inspection, "receptive_field", None):
        print(f"receptive field (input pixels per output element): {inspection.receptive_field}")
    for net, rows in inspection.items():
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


def _leaderboard(args) -> int:
    from bench.io import atomic_write_bytes, check_file_target
    from bench.reporting import leaderboard, render, store
    from bench.tracking.mlflow_tracker import resolve_uri

    outputs = [path for path in (args.csv, args.markdown, args.html) if path]
    for path in outputs:  # all checked before any is written: a bad --html left the --csv and --markdown files
        check_file_target(Path(path))
    uri, experiments = args.uri, []
    for target in args.targets:
        if Path(target).is_file() or target.endswith((".yaml", ".yml")):
            from bench.protocol.load import load_protocol

            p = load_protocol(target).protocol
            uri = uri or resolve_uri(p.tracking.uri)
            experiments.append(p.tracking.experiment or p.name)
        else:
            experiments.append(target)
    uri = uri or resolve_uri(None)
    groups = leaderboard.load(uri, experiments or None, args.fingerprint, sort=args.sort)
    print(render.terminal(groups), end="")
    for path, text in ((args.csv, render.to_csv), (args.markdown, render.markdown), (args.html, render.to_html)):
        if path:
            atomic_write_bytes(Path(path), text(groups).encode())
    if not args.no_log:
        c = store.client(uri)
        for g in groups:
            if g.parent_run_ids:
                store.log_texts(c, g.parent_run_ids[0], {"leaderboard/leaderboard.md": render.markdown([g]),
                                                         "leaderboard/leaderboard.csv": render.to_csv([g]),
                                                         "leaderboard/leaderboard.html": render.to_html([g])})
        # one table per fingerprint, or per set of decoded pixels where a fingerprint's runs decoded differently
        print(f"logged leaderboard/ to the newest protocol run of each of {len(groups)} table(s) in {uri}")
    return 0


def _report(args) -> int:
    import shlex

    from bench.reporting.report import write_report

    command = "bench report " + " ".join(shlex.quote(a) for a in [args.target] + (
        ["--out", args.out] if args.out else []) + (["--uri", args.uri] if args.uri else []))
    rep = write_report(args.target, Path(args.out) if args.out else None, args.uri, command)
    for note in rep.notes:
        print(f"note: {note}")
    print(f"{rep.protocol} (fingerprint {rep.fingerprint[:12]}, run {rep.parent_run_id}): "
          f"wrote {rep.out / 'index.html'}, {rep.out / 'README.md'} and {len(rep.files) - 2} more files")
    return 0


def _check(args) -> int:
    from bench import regression

    result = regression.check(args.protocol, args.baseline, args.run, args.uri, args.rerun, Path(args.workdir),
                              args.allow_improvement)
    print(regression.format_check(result), end="")
    return 1 if result.failed else 0


def _baseline(args) -> int:
    from bench import regression

    path, baseline = regression.update(args.protocol, args.out, args.run, args.uri, args.rel, args.abs)
    n = sum(len(v) for v in baseline["entries"].values())
    print(f"wrote {path}: {len(baseline['entries'])} entries, {n} metrics from run "
          f"{baseline['source']['parent_run_id']} (fingerprint {baseline['fingerprint'][:12]}); "
          f"tolerance {json.dumps(baseline['tolerance'])}")
    return 0


def _score(args) -> int:
    import json

    from bench.metrics import label
    from bench.score import score

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    out = score(args.a, args.b, metrics, args.extractor, args.weights, args.weights_sha256, args.batch_size,
                args.kid_subsets, args.kid_subset_size, args.seed, args.device)
    if not args.no_log:
        from bench.score import record
        from bench.tracking.mlflow_tracker import resolve_uri

        out["mlflow_run"] = record(out, out["fingerprint"], Path(args.workdir), resolve_uri(args.uri))
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return 0
    print(f"{out['a']} vs {out['b']}: {out['n_a']} images" + (f" vs {out['n_b']}" if "n_b" in out else "")
          + f", features {out['extractor']} (sha256 {out['extractor_sha256'][:12]}), fingerprint {out['fingerprint'][:12]}"
          + (f", MLflow run {out['mlflow_run']}" if "mlflow_run" in out else ""))
    m = out["metrics"]
    for key in ("is", "fid", "kid/mean"):
        if key in m:
            base = key.removesuffix("/mean")
            ci = (f" [{m[base + '/ci95_low']:.6g}, {m[base + '/ci95_high']:.6g}]" if f"{base}/ci95_low" in m else "")
            print(f"  {label(key, out['extractor'])}: {m[key]:.6g}{ci}")
    return 0


def _stats(args) -> int:
    import numpy as np

    if args.stats_command == "save":
        from bench.score import save_stats

        info = save_stats(args.source, args.out, args.extractor, args.weights, args.weights_sha256, args.batch_size,
                          args.device)
        print(f"wrote {info['out']}: statistics of {info['n']} images in {info['extractor']} features, "
              f"sha256 {info['sha256']}")
        return 0

    from bench.features.stats import load_reference_stats
    from bench.io import sha256_file

    stats = load_reference_stats(args.file)  # never unpickles; a bad file is one line
    print(f"{args.file}: dimension {stats['mu'].shape[0]}, ||mu|| {np.linalg.norm(stats['mu']):.6g}, "
          f"trace(sigma) {np.trace(stats['sigma']):.6g}, sha256 {sha256_file(Path(args.file))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
