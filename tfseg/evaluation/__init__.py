"""Evaluation as the literature computes it: the polyp protocol (pysodmetrics) and the vessel protocol
(confusion counts, scikit-learn ROC-AUC), with tables and plots. No TensorFlow needed."""

from tfseg.evaluation.evaluate import evaluate, match_predictions, score_file
from tfseg.evaluation.polyp import prediction_map

__all__ = ["evaluate", "match_predictions", "prediction_map", "score_file"]
