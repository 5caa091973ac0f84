"""Everything distributed and tracked: config, Ray Data stages, Ray Train, MLflow, the CLI."""
