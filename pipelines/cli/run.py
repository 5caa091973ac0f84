"""`y9k run`: the whole pipeline as one Ray job. ``python pipelines/full.py ARGS`` is ``y9k run ARGS``
(that file is the entry point for `ray job submit`, and its docstring has the cluster commands)."""

from __future__ import annotations

import argparse
import sys

from pipelines.cli.common import add_config_args, load_cli_config
from pipelines.job import STAGE_NAMES


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline (same as python pipelines/full.py)",
        description="Run the YOLO9000 pipeline (" + " -> ".join(STAGE_NAMES) + ") as one Ray job. Stages whose "
        "inputs and config are unchanged since their last successful run are skipped. See pipelines/full.py for "
        "cluster use.",
        epilog="Examples: `python pipelines/full.py --config pipelines/configs/demo.yaml`; "
        "`ray job submit --working-dir . -- python pipelines/full.py --config pipelines/configs/yolo9000.yaml`.",
    )
    add_config_args(p)
    p.add_argument("--only", action="append", default=[], choices=STAGE_NAMES, metavar="STAGE",
                   help=f"run only this stage (repeatable); one of: {', '.join(STAGE_NAMES)}")
    p.add_argument("--from", dest="start", choices=STAGE_NAMES, metavar="STAGE",
                   help="start at this stage (earlier stages must have run)")
    p.add_argument("--force", action="append", default=[], choices=STAGE_NAMES, metavar="STAGE",
                   help="run this stage even if its record says it is up to date (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (what would run or be skipped) and exit")
    p.add_argument("--retrain", action="store_true",
                   help="scheduled retraining: warm start from the registry's champion, train, evaluate, register, "
                   "promote only if better")
    # `y9k -v` also accepted after the command, as `python pipelines/full.py -v` passes it.
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
    p.set_defaults(func=cmd_run)
    return p


def cmd_run(args: argparse.Namespace) -> int:
    import logging
    import time

    from pipelines import dag, job, redaction, storage
    from pipelines.layout import point_config_at_sample_data, uses_sample_data

    cfg = load_cli_config(args)
    log = logging.getLogger("y9k.full")
    for note in job.adapt_config_to_model(cfg):  # a ConfigError here exits 2 like any config error
        log.info("config: %s", note)
    sample = uses_sample_data(cfg)
    if sample:
        point_config_at_sample_data(cfg)
    ctx = job.JobContext(cfg, retrain=args.retrain, sample_data=sample)
    try:
        stages = dag.select(job.build_stages(), args.only, args.start)
    except Exception as e:
        print(f"y9k run: {redaction.describe(e)}", file=sys.stderr)
        return 2
    log.info("pipeline: %s (storage %s)", " -> ".join(s.name for s in stages), storage.redact_uri(ctx.root))
    if not args.dry_run:
        from pipelines.stages import ensure_ray

        ensure_ray(cfg.ray, job.cpus_needed(cfg, stages))
    t0 = time.perf_counter()
    try:
        outcomes = dag.run_stages(stages, ctx, dry_run=args.dry_run, force=args.force,
                                  storage_options=cfg.storage.options)
    except dag.StageFailed as e:
        print(f"\ny9k run: FAILED: {redaction.redact(str(e))}", file=sys.stderr)
        return 1
    print("\n" + dag.format_report(outcomes))
    if args.dry_run:
        return 0
    print(f"\npipeline finished in {time.perf_counter() - t0:.1f}s; outputs under {storage.redact_uri(ctx.root)}")
    report = ctx.results.get("final_report")
    if report:
        print(report)
    return 0
