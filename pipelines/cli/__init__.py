"""`y9k`: one command line for every stage of the pipeline.

    y9k --help
    y9k wordnet                      # provision WordNet 3.0 for nltk (offline-capable)
    y9k config show --config demo --set train.batch_size=32
    y9k sample-data --out ./y9k-data/sample --seed 0 --scale small
    y9k run --config demo            # the whole pipeline (also: python pipelines/full.py)

One parser: each module of this package registers its commands through ``register(subparsers)``
(:mod:`pipelines.cli.general`, :mod:`~pipelines.cli.data`, :mod:`~pipelines.cli.train`,
:mod:`~pipelines.cli.evaluate`, plus ``wordtree_build.cli``); the shared ``--config``/``--set``
handling is :mod:`pipelines.cli.common`. Heavy imports (torch, Ray, MLflow) happen inside the
handlers, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines.cli import ablation, data, evaluate, general, train
from pipelines.logs import setup_logging
from wordtree_build import cli as wordtree_cli

log = logging.getLogger("y9k")

# Modules providing `register(subparsers)`, in the order their commands are listed.
COMMAND_MODULES = (general, wordtree_cli, data, train, evaluate, ablation)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="y9k",
        description="YOLO9000 pipeline: WordTree from WordNet, Ray Data ingest to Parquet shards, IoU k-means "
        "anchors, Ray Train joint detection + classification, evaluation on ImageNet DET, MLflow registry.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `y9k COMMAND --help` for a command's options. Configs: pipelines/configs/*.yaml "
        "(`--config demo` is the embedded default).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (debug)")
    parser.add_argument("--debug", action="store_true",
                        help="on failure, print the traceback (secrets redacted) before the one-line error; "
                        "also Y9K_DEBUG=1")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines import redaction

    argv = sys.argv[1:] if argv is None else argv
    redaction.remember(list(argv))  # a secret given on the command line is never printed back
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from pipelines.config import ConfigError
    from pipelines.errors import report_failure

    try:
        rc = args.func(args)
    except ConfigError as e:
        print(f"y9k: config error: {redaction.redact(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("y9k: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # One redacted line: user-facing errors carry a complete message (file, record, field);
        # any other (fsspec, botocore, Ray) is summarised, its traceback shown only with --debug.
        what = "error" if getattr(type(e), "user_facing", False) else f"{args.command} failed"
        return report_failure("y9k", what, e, args.debug)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
