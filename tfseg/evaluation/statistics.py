"""Uncertainty of dataset results: percentile-bootstrap confidence intervals over images and the paired Wilcoxon
signed-rank test. No TensorFlow.

The bootstrap resamples images with replacement (numpy.random.default_rng(seed)) and recomputes each resample's
results with the protocol's own `summarize`, so that every metric gets an interval as it is computed, the
non-linear ones too (polyp maxEm, the vessel metrics pooled over pixels). The resampled indices depend only on the
number of images, the number of resamples and the seed: methods scored on the same images get the same resamples
(a paired bootstrap)."""

import numpy as np
from scipy import stats

from tfseg.evaluation import report

LEVEL = 0.95
PERCENTILES = (2.5, 97.5)  # the percentile interval of LEVEL


def resampled_indices(n_images, resamples, seed):
    """[resamples, n_images] image indices drawn with replacement by numpy.random.default_rng(seed)."""
    return np.random.default_rng(seed).integers(0, n_images, size=(resamples, n_images))


def bootstrap_replicates(scores, protocol, threshold, indices):
    """{metric (results.csv column): [resamples] values}: `protocol.summarize` of each resample (a row of
    `indices`) of the per-image `scores`; NaN where a resample leaves a metric undefined. A protocol whose
    `summarize` takes `weights` (the polyp one: means of per-image values) gets every resample at once, as the
    counts of each image in each resample."""
    if protocol.RESAMPLES_AS_WEIGHTS:
        rows = np.arange(len(indices))[:, None] * len(scores) + indices
        counts = np.bincount(rows.ravel(), minlength=indices.size).reshape(len(indices), len(scores))
        return report.flatten(protocol.summarize(scores, threshold, weights=counts))
    keys = report.flatten(protocol.summarize(scores, threshold))
    summaries = [report.flatten(protocol.summarize([scores[i] for i in row], threshold)) for row in indices]
    return {key: np.array([summary.get(key, np.nan) for summary in summaries], np.float64) for key in keys}


def percentile_interval(replicates):
    """[lo, hi]: the 2.5th and 97.5th percentiles (numpy's linear interpolation) of the defined replicates; None
    when none is defined."""
    defined = replicates[~np.isnan(replicates)]
    return [float(value) for value in np.percentile(defined, PERCENTILES)] if defined.size else None


def confidence_intervals(scores, protocol, threshold=0.5, resamples=1000, seed=0):
    """{metric (results.csv column): [lo, hi] or None}: 95% percentile-bootstrap intervals over the images."""
    indices = resampled_indices(len(scores), resamples, seed)
    replicates = bootstrap_replicates(protocol.bootstrap_scores(scores), protocol, threshold, indices)
    return {key: percentile_interval(values) for key, values in replicates.items()}


def wilcoxon(values, reference):
    """(p, number of pairs, None) of scipy.stats.wilcoxon(values, reference) (two-sided, its defaults) on the
    images where both values are defined (not NaN); (None, pairs, reason) where the test cannot run."""
    values, reference = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    defined = ~(np.isnan(values) | np.isnan(reference))
    values, reference = values[defined], reference[defined]
    if not values.size:
        return None, 0, "no image where both values are defined"
    if np.all(values == reference):
        return None, int(values.size), "all paired differences are zero"
    return float(stats.wilcoxon(values, reference).pvalue), int(values.size), None
