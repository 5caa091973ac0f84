"""The whole YOLO9000 pipeline as one Ray job.

    sample data -> wordtree -> ingest -> anchors -> train -> evaluate -> register

Locally, on the embedded defaults (a local Ray instance, ./y9k-data, MLflow in ./mlflow.db):

    python pipelines/full.py --config pipelines/configs/demo.yaml

On a Ray cluster (data on object storage, MLflow on a tracking server):

    export RAY_ADDRESS=http://<head>:8265 MLFLOW_TRACKING_URI=https://mlflow.example.com
    ray job submit --working-dir . -- python pipelines/full.py --config pipelines/configs/yolo9000.yaml

Scheduled retraining (new data in, warm start from the registry's champion, promote if better):

    ray job submit --working-dir . -- python pipelines/full.py --config pipelines/configs/yolo9000.yaml --retrain

Other useful forms:

    python pipelines/full.py --dry-run                 # the plan: what would run, what is cached
    python pipelines/full.py --only anchors            # one stage (its inputs must exist)
    python pipelines/full.py --from train --set train.max_steps=1000

Every stage is skipped when its record matches its inputs and config, so resubmitting a job
after a crash continues from the first unfinished stage. Exit status: 0 on success, 1 when a
stage fails (the message names it), 2 for a bad config or command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# `python pipelines/full.py` puts pipelines/ on sys.path, not the project root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("sample_data", "wordtree", "ingest", "anchors", "train", "evaluate", "register")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pipelines/full.py",
        description="Run the YOLO9000 pipeline (" + " -> ".join(STAGES) + ") as one Ray job. Stages whose "
        "inputs and config are unchanged since their last successful run are skipped.",
        epilog="Examples: `python pipelines/full.py --config pipelines/configs/demo.yaml`; "
        "`ray job submit --working-dir . -- python pipelines/full.py --config pipelines/configs/yolo9000.yaml`.",
    )
    p.add_argument("--config", "-c", default="demo",
                   help="YAML config: a path or a bundled name (demo, yolo9000). Default: demo")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=100 (repeatable)")
    p.add_argument("--only", action="append", default=[], choices=STAGES, metavar="STAGE",
                   help=f"run only this stage (repeatable); one of: {', '.join(STAGES)}")
    p.add_argument("--from", dest="start", choices=STAGES, metavar="STAGE",
                   help="start at this stage (earlier stages must have run)")
    p.add_argument("--force", action="append", default=[], choices=STAGES, metavar="STAGE",
                   help="run this stage even if its record says it is up to date (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (what would run or be skipped) and exit")
    p.add_argument("--retrain", action="store_true",
                   help="scheduled retraining: warm start from the registry's champion, train, evaluate, register, "
                   "promote only if better")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Heavy imports after parsing, so --help is instant.
    from pipelines.config import ConfigError, load_config
    from pipelines.logs import setup_logging

    setup_logging(args.verbose)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"full.py: config error: {e}", file=sys.stderr)
        return 2
    return run(cfg, only=args.only, start=args.start, dry_run=args.dry_run, retrain=args.retrain, force=args.force)


def run(cfg, *, only=(), start=None, dry_run=False, retrain=False, force=()) -> int:
    import logging
    import time

    from pipelines import dag, job, storage
    from pipelines.config import ConfigError

    log = logging.getLogger("y9k.full")
    try:
        for note in job.adapt_config_to_model(cfg):
            log.info("config: %s", note)
    except ConfigError as e:
        print(f"full.py: config error: {e}", file=sys.stderr)
        return 2
    sample = job.use_sample_data(cfg)
    if sample:
        job.point_config_at_sample_data(cfg)
    ctx = job.JobContext(cfg, retrain=retrain, sample_data=sample)
    try:
        stages = dag.select(job.build_stages(), only, start)
    except Exception as e:
        print(f"full.py: {e}", file=sys.stderr)
        return 2
    log.info("pipeline: %s (storage %s)", " -> ".join(s.name for s in stages), storage.redact_uri(ctx.root))
    if not dry_run:
        from pipelines.stages import ensure_ray

        ensure_ray(cfg)
    t0 = time.perf_counter()
    try:
        outcomes = dag.run_stages(stages, ctx, dry_run=dry_run, force=force, storage_options=cfg.storage.options)
    except dag.StageFailed as e:
        print(f"\nfull.py: FAILED: {e}", file=sys.stderr)
        return 1
    print("\n" + dag.format_report(outcomes))
    if dry_run:
        return 0
    print(f"\npipeline finished in {time.perf_counter() - t0:.1f}s; outputs under {storage.redact_uri(ctx.root)}")
    report = ctx.results.get("final_report")
    if report:
        print(report)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
