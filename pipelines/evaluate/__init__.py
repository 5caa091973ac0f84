"""Evaluation: Ray Data batch inference, per-class AP / mAP (all, seen, unseen), plots, MLflow."""
