"""Metric suite: exact kNN, density and manifold metrics, FID / KID, features, ground truth.

Everything takes tensors or numpy arrays (features (N, D), images (N, C, H, W) in [−1, 1] or
uint8 (N, H, W, C)) and imports neither Lightning nor Hydra. :func:`compute_metrics` computes
several metrics at once from two feature sets.
"""

from minority.metrics.density import avg_knn, lof
from minority.metrics.features import (
    FeatureExtractor,
    cached_features,
    data_fingerprint,
    get_feature_extractor,
)
from minority.metrics.frechet import feature_statistics, fid, frechet_distance, kid
from minority.metrics.ground_truth import (
    classify_digits,
    digits_class_shares,
    toy2d_ground_truth,
)
from minority.metrics.knn import Neighbors, knn, smallest_covering_radius
from minority.metrics.manifold import Rarity, precision_recall, rarity_score
from minority.metrics.outputs import (
    plot_score_distributions,
    render_markdown_table,
    upsert_markdown_row,
    write_metrics_json,
)
from minority.metrics.reference import most_unique_indices
from minority.metrics.suite import METRICS, MetricResult, compute_metrics
from minority.metrics.validation import check_same_sample_size, load_samples_npz

__all__ = [
    "METRICS",
    "FeatureExtractor",
    "MetricResult",
    "Neighbors",
    "Rarity",
    "upsert_markdown_row",
    "avg_knn",
    "cached_features",
    "check_same_sample_size",
    "classify_digits",
    "compute_metrics",
    "data_fingerprint",
    "digits_class_shares",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "get_feature_extractor",
    "kid",
    "knn",
    "load_samples_npz",
    "lof",
    "most_unique_indices",
    "plot_score_distributions",
    "precision_recall",
    "rarity_score",
    "render_markdown_table",
    "smallest_covering_radius",
    "toy2d_ground_truth",
    "write_metrics_json",
]
