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

This file is ``y9k run`` (:mod:`pipelines.cli.run`) under a path Ray can run: the same
parser, options and behaviour. It needs the project importable (installed, or the job's
``--working-dir``, which Ray puts on the job's PYTHONPATH).
"""

from __future__ import annotations

import os
import sys

from pipelines.cli import main

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(["run", *sys.argv[1:]]))
