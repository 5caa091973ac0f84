"""`y9k ablation`: train every configuration of a path (the YOLO9000 paper's Table 2) and tabulate them."""

from __future__ import annotations

import argparse

from pipelines.cli.common import add_config_args, load_cli_config


def register(sub: argparse._SubParsersAction) -> None:
    from yolo_core.table2 import STEP_NAMES

    p = sub.add_parser(
        "ablation",
        help="the path from YOLO to YOLOv2 (YOLO9000 paper, Table 2): one training run per column, one table",
        description="Run the data stages once (sample data, WordTree, ingest, anchors), then train every "
        "cumulative configuration of --steps on the same data and budget (train.*) through Ray Train, evaluate "
        "each (mAP@.5 over the evaluated classes), and write the table (mAP@.5, the paper's VOC 2007 figures "
        "beside it, FLOPs, images/s) as Markdown, CSV, PNG and JSON under <storage.root>/ablation/<steps>/. "
        "MLflow: one parent run, a child run per column. Configurations with the hi-res classifier first train "
        "a classifier at the detector's size for ablation.classifier_steps steps. Finished trainings and "
        "evaluations are reused when run again. Switches: model.table2 (see yolo_core/table2.py); columns of "
        f"table2: {', '.join(STEP_NAMES)}.",
    )
    add_config_args(p)
    p.add_argument("--steps", default="table2", choices=["table2"],
                   help="the path to run: table2 (YOLO -> YOLOv2, the paper's nine columns). Default: table2")
    p.add_argument("--only", metavar="STEP[,STEP...]",
                   help="run only these columns (comma-separated, in the path's order), e.g. yolo,passthrough")
    p.set_defaults(func=cmd_ablation)


def cmd_ablation(args: argparse.Namespace) -> int:
    from pipelines import storage
    from pipelines.ablation import markdown, run_ablation

    cfg = load_cli_config(args)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    result = run_ablation(cfg, args.steps, only)
    print("\n" + markdown(result.rows, result.steps))
    print(f"written: {', '.join(storage.redact_uri(u) for u in result.files.values())}")
    print(f"MLflow parent run: {result.parent_run_id}")
    return 0
