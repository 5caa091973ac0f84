"""Ray Train joint training: data streams, darknet optimization, the per-worker loop,
checkpoints, MLflow tracking and the `train` stage (see stage.run_train)."""
