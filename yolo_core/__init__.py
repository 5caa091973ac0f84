"""yolo_core: the YOLOv2 / YOLO9000 model library in plain PyTorch (no Ray, no MLflow, no nltk)."""
