"""Which image-label rule lets joint training detect classes it only saw in classification data,
and does one recipe hold on more than one generated world?

    .venv/bin/python tests/benchmarks/bench_learning.py [--worlds zoo depot] [--seeds 0 1]
        [--rules label object size] [--root DIR] [--set KEY=VALUE ...] [--smoke] [--out FILE]

The ablation grid (issue 21): for every world (``sample_data.world``) and seed, the whole demo
pipeline (``y9k run``: sample data -> wordtree -> ingest -> anchors -> train ->
evaluate -> register) once with detection data only (``train.mode=detect``, the baseline) and
once jointly (``train.mode=joint``) per selection rule (``train.cls_select``: ``label`` =
YOLO9000 / darknet, ``object`` = most object-like, ``size`` = Detic's max-size; ``image`` on
request). Every run of one grid has the same budget (the demo config plus ``--set``); a seed
sets both the generated data (``sample_data.seed``) and the training (``train.seed``). Runs of
one (world, seed) share a storage root, so the later ones reuse the cached upstream stages.

Reported per run: mAP@.5 over the seen and the unseen DET classes, AP@.5 of every unseen class,
and the sibling diagnostic (``pipelines.evaluate.metrics.sibling_accuracy``): of the unseen fine
classes' boxes, how many some prediction of their sibling group finds (IoU >= .5: "where"), and
of those, how often the highest-scored sibling is the right one ("which"), in all and per class.
Target (issue 21): one rule for which joint unseen mAP@.5 is at least 2x the detection-only one
and at least 0.25 on every world and seed; where it is not, ``failures`` lists the runs and the
unseen classes below target with their AP, found rate and sibling accuracy.

``--smoke`` checks the grid's plumbing on a tiny budget (tiny data, a few steps, one seed unless
``--seeds`` says otherwise) and writes to ``--out`` (default: a temporary file), never to
results/: its figures mean nothing about learning.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))
from _common import machine_info, write_result  # noqa: E402

MIN_UNSEEN = 0.25
MIN_RATIO = 2.0
# A few steps on tiny data: every stage runs, nothing is learnt (the integration test's budget).
SMOKE = [
    "sample_data.scale=tiny", "data.max_side=128", "data.shard_mb=4", "anchors.input_size=64", "anchors.k=3",
    "anchors.k_max=5", "anchors.restarts=2", "train.max_steps=4", "train.batch_size=4", "train.steps=[2, 3]",
    "train.burn_in=1", "train.input_size=64", "train.multiscale_min=64", "train.multiscale_max=96",
    "train.checkpoint_every=2", "train.log_every=2", "eval.input_size=64", "eval.batch_size=4", "eval.draw_images=0",
]


def settings(rules: list[str]) -> list[tuple[str, list[str]]]:
    """(name, overrides) of each run of one (world, seed): the baseline first."""
    return [("detect", ["train.mode=detect"])] + [(f"joint_{r}", ["train.mode=joint", f"train.cls_select={r}"])
                                                   for r in rules]


def run_once(root: Path, overrides: list[str]) -> tuple[dict, Path, float]:
    """One demo pipeline run (``y9k run``); its evaluation record, evaluation directory and wall time."""
    from pipelines.cli import main as y9k

    sets = [f"storage.root={root}", f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", *overrides]
    before = set(root.glob("eval/*/metrics.json"))
    t0 = time.perf_counter()
    try:
        rc = y9k(["run", "--config", "demo", *(a for o in sets for a in ("--set", o))])
    finally:
        import ray

        # Each run sizes its own local Ray instance (joint training needs a CPU more than
        # detection only), as separate `y9k run` processes would.
        ray.shutdown()
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"bench_learning: the pipeline failed (exit status {rc}) with {overrides}")
    new = set(root.glob("eval/*/metrics.json")) - before
    if len(new) != 1:
        raise SystemExit(f"bench_learning: expected one new evaluation under {root}/eval, found {len(new)}")
    path = new.pop()
    return json.loads(path.read_text()), path.parent, seconds


def sibling_diagnostic(root: Path, eval_dir: Path, overrides: list[str], world_name: str) -> dict:
    """``sibling_accuracy`` of one evaluation, over the world's sibling groups (the fine classes
    below each coarse class), per class by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.config import load_config
    from pipelines.evaluate import metrics as M
    from pipelines.inference import read_predictions
    from pipelines.layout import EVALUATE, Layout
    from pipelines.sample_data import world
    from pipelines.shards import GROUND_TRUTH_COLUMNS, shard_files
    from pipelines.stages.wordtree import load_det_classes

    cfg = load_config("demo", [f"storage.root={root}", *overrides])
    layout = Layout.of(cfg.storage)
    rows = load_det_classes(layout.wordtree)
    wnids, names = [r["wnid"] for r in rows], [r["name"] for r in rows]
    files = shard_files(layout.splits_for(EVALUATE))
    table = pa.concat_tables([pq.read_table(f, columns=GROUND_TRUTH_COLUMNS) for f in files])
    gt = M.ground_truth_from_shards(table, wnids, names)
    preds = M.predictions_from_table(read_predictions(str(eval_dir / "predictions")), gt)
    w = world(world_name)
    index = {wn: i for i, wn in enumerate(wnids)}
    groups = [[index[f.wnid] for f in w.fine if f.coarse == c.name] for c in w.coarse]
    r = M.sibling_accuracy(gt, preds, groups)
    r["per_class"] = {names[c]: v for c, v in r["per_class"].items()}
    return r


def run_grid(base: Path, worlds: list[str], seeds: list[int], rules: list[str], extra: list[str]) -> list[dict]:
    runs = []
    for world_name in worlds:
        for seed in seeds:
            root = base / f"{world_name}-seed{seed}"
            root.mkdir(parents=True, exist_ok=True)
            common = [f"sample_data.world={world_name}", f"sample_data.seed={seed}", f"train.seed={seed}", *extra]
            for name, setting in settings(rules):
                overrides = [*common, *setting]
                record, eval_dir, seconds = run_once(root, overrides)
                m = record["metrics"]
                runs.append({
                    "world": world_name, "seed": seed, "setting": name,
                    "map50_seen": m["map50_seen"], "map50_unseen": m["map50_unseen"],
                    "ap50_unseen": {c["name"]: c["ap50"] for c in record["per_class"] if c["split"] == "unseen"},
                    "siblings": sibling_diagnostic(root, eval_dir, overrides, world_name),
                    "wall_s": round(seconds, 1),
                })
                print(f"{world_name} seed {seed} {name}: seen {m['map50_seen']:.3f} unseen {m['map50_unseen']:.3f} "
                      f"sibling acc {runs[-1]['siblings']['sibling_accuracy']:.3f} ({seconds:.0f} s)", flush=True)
    return runs


def judge(runs: list[dict], rules: list[str]) -> tuple[dict, list[dict], str | None, float | None]:
    """Per rule: does it reach the target on every (world, seed)? The failures with figures, the
    best rule (met, or the highest worst-case ratio) and that worst-case ratio."""
    by = {(r["world"], r["seed"], r["setting"]): r for r in runs}
    verdict, failures, worst = {}, [], {}
    for rule in rules:
        ratios, ok = [], True
        for (w, s, setting), r in by.items():
            if setting != f"joint_{rule}":
                continue
            det = by[(w, s, "detect")]
            if det["map50_unseen"] > 0:
                ratio = r["map50_unseen"] / det["map50_unseen"]
            else:  # over a detection-only 0, any gain is "infinitely" better, none is not
                ratio = float("inf") if r["map50_unseen"] > 0 else 0.0
            ratios.append(ratio)
            if ratio >= MIN_RATIO and r["map50_unseen"] >= MIN_UNSEEN:
                continue
            ok = False
            sib = r["siblings"]["per_class"]
            weak = {}
            for c, ap in r["ap50_unseen"].items():
                det_ap = det["ap50_unseen"].get(c)
                if ap is None or ap >= max(MIN_UNSEEN, MIN_RATIO * (det_ap or 0)):  # None: no boxes of c
                    continue
                counts = sib.get(c, {})
                weak[c] = {"ap50_joint": round(ap, 4), "ap50_detect": None if det_ap is None else round(det_ap, 4),
                           "found_rate": round(counts["found"] / counts["boxes"], 3) if counts.get("boxes") else None,
                           "sibling_accuracy": round(counts["right"] / counts["found"], 3) if counts.get("found") else None}
            failures.append({"rule": rule, "world": w, "seed": s, "map50_unseen": r["map50_unseen"],
                             "detect_map50_unseen": det["map50_unseen"], "ratio": ratio, "classes_below_target": weak})
        verdict[rule] = ok and bool(ratios)
        worst[rule] = min(ratios) if ratios else None
    met = [r for r in rules if verdict[r]]
    candidates = met or [r for r in rules if worst[r] is not None]
    best = max(candidates, key=lambda r: worst[r]) if candidates else None
    return verdict, failures, best, (worst[best] if best else None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worlds", nargs="+", default=["zoo", "depot"], help="generated worlds (default: zoo depot)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: 0 1; with --smoke: 0)")
    p.add_argument("--rules", nargs="+", default=["label", "object", "size"],
                   help="train.cls_select rules run jointly (default: label object size)")
    p.add_argument("--root", help="storage root (default: a fresh temporary directory, removed afterwards)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (repeatable)")
    p.add_argument("--smoke", action="store_true", help="tiny budget, to check the plumbing; never written to results/")
    p.add_argument("--out", help="write the record here instead of results/learning.json (default with --smoke: "
                   "a temporary file)")
    args = p.parse_args()
    seeds = args.seeds if args.seeds is not None else ([0] if args.smoke else [0, 1])
    extra = [*(SMOKE if args.smoke else []), *args.overrides]

    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        base = Path(args.root or tmp).resolve()
        t0 = time.perf_counter()
        runs = run_grid(base, args.worlds, seeds, args.rules, extra)
        grid_s = time.perf_counter() - t0

    verdict, failures, best, best_ratio = judge(runs, args.rules)
    from pipelines.config import load_config

    cfg = load_config("demo", extra)
    t = cfg.train
    metrics: dict = {}
    for name, _ in settings(args.rules):
        sel = [r for r in runs if r["setting"] == name]
        metrics[f"{name}_unseen_min"] = {"value": min(r["map50_unseen"] for r in sel),
                                         "unit": "mAP@.5, worst world x seed"}
    for name, _ in settings(args.rules):
        sel = [r for r in runs if r["setting"] == name]
        metrics[f"{name}_unseen_mean"] = {"value": statistics.mean(r["map50_unseen"] for r in sel), "unit": "mAP@.5"}
        metrics[f"{name}_seen_mean"] = {"value": statistics.mean(r["map50_seen"] for r in sel), "unit": "mAP@.5"}
    metrics["grid_wall_s"] = {"value": round(grid_s, 1), "unit": "s"}
    metrics["runs"] = {"value": runs, "unit": "one entry per (world, seed, setting)"}
    workload = {
        "worlds": args.worlds, "seeds": seeds, "settings": [n for n, _ in settings(args.rules)],
        "data": f"generated sample data, scale {cfg.sample_data.scale}",
        "model": f"{cfg.model.name} width {cfg.model.width}", "steps": t.max_steps, "batch_size": t.batch_size,
        "det_fraction_joint": t.det_fraction, "loss_variant": t.loss_variant, "cls_topk": t.cls_topk,
        "cls_loss_weight": t.cls_loss_weight, "input_size": t.input_size, "lr": t.lr, "optimizer": t.optimizer,
        "eval_input_size": cfg.eval.input_size, "overrides": extra, "smoke": args.smoke,
    }
    target = (f"one rule with joint unseen mAP@.5 >= {MIN_RATIO:g}x detect-only and >= {MIN_UNSEEN} on every "
              "world and seed")
    notes = ("Rule verdicts: " + ", ".join(f"{r}: {'met' if v else 'not met'}" for r, v in verdict.items())
             + ". Failures (runs and classes below target, with found rate and sibling accuracy): "
             + json.dumps(failures))
    if args.smoke or args.out:
        out = Path(args.out or Path(tempfile.gettempdir()) / "bench-learning-smoke.json")
        out.write_text(json.dumps({
            "name": "learning (smoke: plumbing only, figures mean nothing)" if args.smoke else "learning",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
            "workload": workload, "metrics": metrics, "best_rule": best, "best_rule_worst_ratio": best_ratio,
            "target": target, "meets_target": any(verdict.values()), "notes": notes}, indent=2, default=str) + "\n")
    else:
        out = write_result(
            "learning", workload=workload, metrics=metrics,
            baseline={"what": "detection-only run (train.mode=detect), same budget, same world and seed",
                      "value": metrics["detect_unseen_min"]["value"], "unit": "unseen mAP@.5 (worst)"},
            ratio=best_ratio, target=target, meets_target=any(verdict.values()), notes=notes)
    print(json.dumps({k: v["value"] for k, v in metrics.items() if k != "runs"}, indent=2))
    print(f"best rule: {best} (worst-case ratio {best_ratio}); verdicts {verdict}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
