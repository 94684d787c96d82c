"""Side measurement for reports/celeba-style (reports/celeba-ema-investigation.md): FID of each grown family's
EMA G (what the report scores) and of its raw G, from the run's final checkpoints, with the protocol's data,
judge, sample size and evaluation seeds. Usage, from the folder the protocol ran in:

    python reports/investigations/celeba_ema_vs_raw.py runs/celeba-style-<fingerprint>
"""
import json, sys, torch
from pathlib import Path
from bench.data import load_dataset
from bench.entries import build_entry
from bench.evaluation import real_features, seed_features
from bench.features.extractors import make_extractor
from bench.metrics.fid import frechet
from bench.protocol.load import load_protocol
from bench.runner import checkpoint
from bench.runner import distributed as dist

run = Path(sys.argv[1])
loaded = load_protocol(Path(__file__).resolve().parents[2] / "protocols" / "celeba-style.yaml")
p = loaded.protocol
data = load_dataset(p.dataset, p.seed)
ext = make_extractor(p.evaluation.extractor, data, 0, torch.device("cpu"))
_, real_stats, _ = real_features(ext, data, 100)
out = {}
for entry in p.entries:
    if entry.zoo not in ("progan", "stylegan") or not entry.train.steps:
        continue
    path = run / entry.name / "latest.pt"
    for variant in ("ema", "raw"):
        model, _ = build_entry(entry, p, data, torch.device("cpu"))
        payload = checkpoint.read(path)
        checkpoint.load_into(payload, model, path, weights_only=True)
        if variant == "raw":
            model.ema = None
        fids = []
        for s in p.evaluation.seeds:
            _, stats = seed_features(model, ext, p, s, entry.fit, dist.current())
            fids.append(frechet(real_stats, stats.as_fid_stats()))
        out[f"{entry.name}/{variant}"] = [round(f, 2) for f in fids]
        print(entry.name, variant, round(sum(fids) / len(fids), 2), flush=True)
print(json.dumps(out))
