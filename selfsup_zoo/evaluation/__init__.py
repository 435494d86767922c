"""Evaluation of frozen backbones (any timm model): weighted k-NN classification."""
from selfsup_zoo.evaluation.knn import extract_features, knn_evaluate, knn_predict

__all__ = ["extract_features", "knn_evaluate", "knn_predict"]
