"""Which image-label rule lets joint training detect classes it only saw in classification data,
and does one recipe hold on more than one generated world?

    .venv/bin/python tests/benchmarks/bench_learning.py [--worlds zoo depot] [--seeds 0 1]
        [--rules label object size image] [--root DIR] [--set KEY=VALUE ...] [--smoke] [--out FILE]

The ablation grid (issue 21): for every world (``sample_data.world``) and seed, the whole demo
pipeline (``y9k run``: sample data -> wordtree -> ingest -> anchors -> train ->
evaluate -> register) once with detection data only (``train.mode=detect``, the baseline) and
once jointly (``train.mode=joint``) per selection rule (``train.cls_select``: ``label`` =
YOLO9000 / darknet, ``object`` = most object-like, ``size`` = Detic's max-size, ``image`` =
Detic's whole-image box). Every run of one grid has the same budget (the demo config plus
``--set``); a seed sets both the generated data (``sample_data.seed``) and the training
(``train.seed``). Runs of one (world, seed) share a storage root, so the later ones reuse the
cached upstream stages.

Reported per run: mAP@.5 over the seen and the unseen DET classes, AP@.5 of every unseen class,
and the sibling diagnostic (``pipelines.evaluate.metrics.sibling_accuracy``): of the unseen fine
classes' boxes, how many some prediction of their sibling group finds (IoU >= .5: "where"), and
of those, how often the highest-scored sibling is the right one ("which"), in all and per class.
Target (issue 21): one rule for which joint unseen mAP@.5 is at least 2x the detection-only one
and at least 0.25 on every world and seed; where it is not, ``failures`` lists the runs and the
unseen classes below target with their AP, found rate and sibling accuracy.

The record (``--out``, default ``results/learning.json``) is rewritten after every run, so a grid
stopped early keeps its rows (``partial``, ``not_run``); run again with the same code and budget
it skips the runs recorded (``--fresh`` starts over). Runs go seed by seed, world by world, the
baseline first: the first rows are complete (world, seed) blocks of every world. The record
names the commit the grid ran on (``workload.grid_identity``); a record of other code or budget
is not resumed. The committed ablation is ``results/learning_ablation.json``
(``--out tests/benchmarks/results/learning_ablation.json``).

``--smoke`` checks the grid's plumbing on a tiny budget (tiny data, a few steps, one seed unless
``--seeds`` says otherwise) and writes to ``--out`` (default: a temporary file), never to
results/: its figures mean nothing about learning.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))
from _common import RESULTS, machine_info, regenerate_table  # noqa: E402

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
    below each coarse class), per class by name; and under ``any_class``, per unseen class (the
    unrelated ones too), the same counts with every class one group: a box is found when a
    prediction of any class overlaps it (did objectness reach it at all?), right when the
    top-scored one names it."""
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
    unseen = {index[f.wnid] for f in w.fine}
    anywhere = M.sibling_accuracy(gt, preds, [list(range(len(wnids)))])["per_class"]
    r["any_class"] = {names[c]: v for c, v in anywhere.items() if c in unseen}
    return r


def run_overrides(world_name: str, seed: int, setting: list[str], extra: list[str]) -> list[str]:
    return [f"sample_data.world={world_name}", f"sample_data.seed={seed}", f"train.seed={seed}", *extra, *setting]


def planned_runs(worlds: list[str], seeds: list[int], rules: list[str]) -> list[tuple[str, int, str, list[str]]]:
    """(world, seed, setting, overrides) of every run, in order: seed by seed, and within a seed
    world by world with the baseline first, so that a grid stopped early holds complete
    (world, seed) blocks of every world before a second seed of any."""
    return [(w, s, name, setting) for s in seeds for w in worlds for name, setting in settings(rules)]


def one_run(base: Path, world_name: str, seed: int, name: str, setting: list[str], extra: list[str]) -> dict:
    """Run one setting of one (world, seed) and summarize it. Runs of one (world, seed) share a
    storage root (the later ones reuse the cached sample data, wordtree, shards and anchors)."""
    root = base / f"{world_name}-seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    overrides = run_overrides(world_name, seed, setting, extra)
    load_before = os.getloadavg()
    record, eval_dir, seconds = run_once(root, overrides)
    m = record["metrics"]
    return {
        "world": world_name, "seed": seed, "setting": name,
        "map50_seen": m["map50_seen"], "map50_unseen": m["map50_unseen"],
        "ap50_unseen": {c["name"]: c["ap50"] for c in record["per_class"] if c["split"] == "unseen"},
        "siblings": sibling_diagnostic(root, eval_dir, overrides, world_name),
        "wall_s": round(seconds, 1),
        # The machine is shared: the load around a run says how much its wall time means.
        "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def judge(runs: list[dict], rules: list[str]) -> tuple[dict, list[dict], str | None, float | None]:
    """Per rule: does it reach the target on every (world, seed) recorded so far? The failures
    with figures, the best rule (met, or the highest worst-case ratio) and that worst-case ratio.
    A joint run is judged against the detection-only run of its (world, seed); without one (a
    grid stopped between them) it is not judged."""
    by = {(r["world"], r["seed"], r["setting"]): r for r in runs}
    verdict, failures, worst = {}, [], {}
    for rule in rules:
        ratios, ok = [], True
        for (w, s, setting), r in by.items():
            det = by.get((w, s, "detect"))
            if setting != f"joint_{rule}" or det is None:
                continue
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
                counts, anywhere = sib.get(c, {}), r["siblings"].get("any_class", {}).get(c, {})
                weak[c] = {"ap50_joint": round(ap, 4), "ap50_detect": None if det_ap is None else round(det_ap, 4),
                           "found_rate": round(counts["found"] / counts["boxes"], 3) if counts.get("boxes") else None,
                           "sibling_accuracy": round(counts["right"] / counts["found"], 3) if counts.get("found") else None,
                           "found_by_any_class_rate": (round(anywhere["found"] / anywhere["boxes"], 3)
                                                       if anywhere.get("boxes") else None)}
            failures.append({"rule": rule, "world": w, "seed": s, "map50_unseen": r["map50_unseen"],
                             "detect_map50_unseen": det["map50_unseen"], "ratio": ratio, "classes_below_target": weak})
        verdict[rule] = ok and bool(ratios)
        worst[rule] = min(ratios) if ratios else None
    met = [r for r in rules if verdict[r]]
    candidates = met or [r for r in rules if worst[r] is not None]
    best = max(candidates, key=lambda r: worst[r]) if candidates else None
    return verdict, failures, best, (worst[best] if best else None)


def code_version() -> str:
    """The commit the grid runs on (``+dirty`` when the checkout has uncommitted changes): one
    grid, one code version."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(HERE), *a], capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def recorded_runs(out: Path, identity: dict, fresh: bool) -> list[dict]:
    """The runs already in ``out`` from a grid of the same code and budget (to resume it), or none
    (``--fresh``, no file, or a record without runs). A record of other code or budget is an
    error: its rows would be mixed with this grid's."""
    if fresh or not out.exists():
        return []
    try:
        old = json.loads(out.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"bench_learning: {out} is not a JSON record ({e}); move it away or pass --fresh") from e
    runs = old.get("metrics", {}).get("runs", {}).get("value") or []
    if not runs:
        return []
    theirs = old.get("workload", {}).get("grid_identity")
    if theirs != identity:
        raise SystemExit(f"bench_learning: {out} holds {len(runs)} runs of another grid ({theirs}); this one is "
                         f"{identity}. Pass --fresh to replace them, or --out another file.")
    return runs


def _finite(x):
    """NaN (a rate with nothing to count) as null: the record stays valid JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def write_record(out: Path, *, runs: list[dict], planned: list[tuple], rules: list[str], workload: dict,
                 machine: dict, smoke: bool) -> bool:
    """Write the grid's record as it stands (after every run: a stopped grid keeps its rows).
    Returns whether the target is met (only a complete grid can meet it)."""
    verdict, failures, best, best_ratio = judge(runs, rules)
    done = {(r["world"], r["seed"], r["setting"]) for r in runs}
    missing = [f"{w}/seed{s}/{n}" for w, s, n, _ in planned if (w, s, n) not in done]
    metrics: dict = {}
    for name, _ in settings(rules):
        sel = [r for r in runs if r["setting"] == name]
        if sel:
            metrics[f"{name}_unseen_min"] = {"value": min(r["map50_unseen"] for r in sel),
                                             "unit": f"mAP@.5, worst of {len(sel)} world x seed"}
    for name, _ in settings(rules):
        sel = [r for r in runs if r["setting"] == name]
        if sel:
            metrics[f"{name}_unseen_mean"] = {"value": statistics.mean(r["map50_unseen"] for r in sel), "unit": "mAP@.5"}
            metrics[f"{name}_seen_mean"] = {"value": statistics.mean(r["map50_seen"] for r in sel), "unit": "mAP@.5"}
    metrics["grid_wall_s"] = {"value": round(sum(r["wall_s"] for r in runs), 1), "unit": "s (sum of the runs)"}
    metrics["runs"] = {"value": runs, "unit": "one entry per (world, seed, setting)"}
    meets = not missing and any(verdict.values())
    target = (f"one rule with joint unseen mAP@.5 >= {MIN_RATIO:g}x detect-only and >= {MIN_UNSEEN} on every "
              "world and seed")
    notes = (("PARTIAL: not run: " + ", ".join(missing) + ". " if missing else "")
             + "Rule verdicts over the runs recorded: "
             + ", ".join(f"{r}: {'met' if v else 'not met'}" for r, v in verdict.items())
             + f". Best rule: {best} (worst-case ratio {best_ratio}). Failures (runs and classes below target, "
             "with found rate and sibling accuracy): " + json.dumps(_finite(failures)))
    record = {
        "name": ("learning (smoke: plumbing only, figures mean nothing)" if smoke else out.stem),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
        "workload": workload, "metrics": metrics,
        "baseline": {"what": "detection-only run (train.mode=detect), same budget, same world and seed",
                     "value": metrics.get("detect_unseen_min", {}).get("value"), "unit": "unseen mAP@.5 (worst)"},
        "ratio": best_ratio, "target": target, "meets_target": meets, "partial": bool(missing),
        "not_run": missing, "verdicts": verdict, "best_rule": best, "failures": failures, "notes": notes,
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(_finite(record), indent=2, default=str) + "\n")
    tmp.replace(out)  # whole or not at all: a grid stopped while writing keeps the previous rows
    if out.parent.resolve() == RESULTS.resolve():
        regenerate_table()
    return meets


def markdown_table(record: dict) -> str:
    """The grid's record as the README's table: one row per (world, seed, setting), the joint
    runs' unseen mAP@.5 also as a ratio to the detection-only run of the same world and seed."""
    runs = record["metrics"]["runs"]["value"]
    det = {(r["world"], r["seed"]): r["map50_unseen"] for r in runs if r["setting"] == "detect"}
    # Block by block (seed, then world), detection only first, whatever order they ran in (a rule
    # added to a finished grid runs last).
    worlds = list(dict.fromkeys(r["world"] for r in runs))
    settings = list(dict.fromkeys(["detect", *(r["setting"] for r in runs)]))
    runs = sorted(runs, key=lambda r: (r["seed"], worlds.index(r["world"]), settings.index(r["setting"])))
    lines = ["| world | seed | setting | unseen mAP@.5 | x detection only | seen mAP@.5 | fine-class boxes found "
             "| right among siblings, given found |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        base = det.get((r["world"], r["seed"]))
        ratio = "" if r["setting"] == "detect" or not base else f"{r['map50_unseen'] / base:.2f}x"
        sib = r["siblings"]
        found = "" if sib.get("found_rate") is None else f"{sib['found_rate']:.0%} of {sib['boxes']}"
        right = "" if sib.get("sibling_accuracy") is None else f"{sib['sibling_accuracy']:.0%}"
        lines.append(f"| {r['world']} | {r['seed']} | {r['setting'].replace('joint_', 'joint, ')} | "
                     f"{r['map50_unseen']:.3f} | {ratio} | {r['map50_seen']:.3f} | {found} | {right} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worlds", nargs="+", default=["zoo", "depot"], help="generated worlds (default: zoo depot)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: 0 1; with --smoke: 0)")
    p.add_argument("--rules", nargs="+", default=["label", "object", "size", "image"],
                   help="train.cls_select rules run jointly (default: label object size image)")
    p.add_argument("--root", help="storage root (default: a fresh temporary directory, removed afterwards)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (repeatable)")
    p.add_argument("--smoke", action="store_true", help="tiny budget, to check the plumbing; never written to results/")
    p.add_argument("--out", help="the record (default: results/learning.json; with --smoke a temporary file). "
                   "Rewritten after every run; runs it already holds from the same code and budget are skipped")
    p.add_argument("--fresh", action="store_true", help="replace the runs --out holds instead of resuming")
    p.add_argument("--table", metavar="RECORD", help="print a record's runs as a Markdown table (the README's) and exit")
    args = p.parse_args()
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return 0
    seeds = args.seeds if args.seeds is not None else ([0] if args.smoke else [0, 1])
    extra = [*(SMOKE if args.smoke else []), *args.overrides]
    if args.out:
        out = Path(args.out).resolve()
    elif args.smoke:
        out = Path(tempfile.gettempdir()) / "bench-learning-smoke.json"
    else:
        out = RESULTS / "learning.json"
    if args.smoke and out.parent.resolve() == RESULTS.resolve():
        raise SystemExit("bench_learning: --smoke figures mean nothing; not written to results/")

    from pipelines.config import load_config

    cfg = load_config("demo", extra)
    t = cfg.train
    identity = {"commit": code_version(), "overrides": extra}
    workload = {
        "worlds": args.worlds, "seeds": seeds, "settings": [n for n, _ in settings(args.rules)],
        "order": "seed by seed; within a seed world by world, detection only first",
        "data": f"generated sample data, scale {cfg.sample_data.scale}",
        "model": f"{cfg.model.name} width {cfg.model.width}", "steps": t.max_steps, "batch_size": t.batch_size,
        "det_fraction_joint": t.det_fraction, "loss_variant": t.loss_variant, "cls_topk": t.cls_topk,
        "cls_loss_weight": t.cls_loss_weight, "input_size": t.input_size, "lr": t.lr, "optimizer": t.optimizer,
        "eval_input_size": cfg.eval.input_size, "overrides": extra, "smoke": args.smoke,
        "grid_identity": identity,
    }
    machine = machine_info()
    planned = planned_runs(args.worlds, seeds, args.rules)
    runs = recorded_runs(out, identity, args.fresh)
    done = {(r["world"], r["seed"], r["setting"]) for r in runs}
    if done:
        print(f"resuming {out}: {len(done)} runs recorded, skipped", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        base = Path(args.root or tmp).resolve()
        for world_name, seed, name, setting in planned:
            if (world_name, seed, name) in done:
                continue
            r = one_run(base, world_name, seed, name, setting, extra)
            runs.append(r)
            meets = write_record(out, runs=runs, planned=planned, rules=args.rules, workload=workload,
                                 machine=machine, smoke=args.smoke)
            print(f"{world_name} seed {seed} {name}: seen {r['map50_seen']:.3f} unseen {r['map50_unseen']:.3f} "
                  f"sibling acc {r['siblings']['sibling_accuracy']:.3f} ({r['wall_s']:.0f} s, load "
                  f"{r['loadavg_1m_before_after']}); recorded in {out}", flush=True)
    meets = write_record(out, runs=runs, planned=planned, rules=args.rules, workload=workload, machine=machine,
                         smoke=args.smoke)
    record = json.loads(out.read_text())
    print(json.dumps({k: v["value"] for k, v in record["metrics"].items() if k != "runs"}, indent=2))
    print(f"best rule: {record['best_rule']} (worst-case ratio {record['ratio']}); verdicts {record['verdicts']}; "
          f"target met: {meets}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
