"""IoU k-means: the paper's Table 1 on VOC 2007 boxes, the algorithm's properties, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import shared_path
from yolo_core.kmeans import avg_iou, avg_iou_curve, best_possible_recall, kmeans_iou, shape_iou


@pytest.fixture(scope="module")
def voc_wh() -> np.ndarray:
    d = np.loadtxt(shared_path("voc2007", "boxes_trainval.csv"), delimiter=",", skiprows=1, usecols=(1, 2, 3, 4))
    return np.stack([d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]], axis=1)


def test_voc2007_table1(voc_wh):
    """Paper, Table 1: average IoU 61.0 (k=5) and 67.2 (k=9) for IoU k-means on VOC 2007."""
    assert len(voc_wh) == 12608
    got = {(c, k): kmeans_iou(voc_wh, k, centroid=c, restarts=5, seed=0).avg_iou * 100
           for c in ("mean", "median") for k in (5, 9)}
    print("\nVOC 2007 trainval, IoU k-means average IoU (%): "
          + ", ".join(f"{c} k={k}: {v:.2f}" for (c, k), v in got.items()) + " (paper: 61.0 / 67.2)")
    assert got["mean", 5] >= 60.0 and got["mean", 9] >= 66.2
    assert got["median", 5] >= 60.0 and got["median", 9] >= 66.2
    # Median centroids fit IoU better than means on these boxes.
    assert got["median", 5] > got["mean", 5] and got["median", 9] > got["mean", 9]


def test_shape_iou_against_direct_formula():
    rng = np.random.default_rng(1)
    wh, c = rng.uniform(0.1, 5, (50, 2)), rng.uniform(0.1, 5, (4, 2))
    got = shape_iou(wh, c)
    for i in range(50):
        for j in range(4):
            inter = min(wh[i, 0], c[j, 0]) * min(wh[i, 1], c[j, 1])
            want = inter / (wh[i].prod() + c[j].prod() - inter)
            assert got[i, j] == pytest.approx(want, rel=1e-5)


def test_recovers_separated_clusters_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = np.array([[0.05, 0.08], [0.3, 0.2], [0.6, 0.9]])
    wh = np.concatenate([c * np.exp(rng.normal(0, 0.05, (400, 2))) for c in centres])
    r = kmeans_iou(wh, 3, seed=3)
    np.testing.assert_allclose(r.centroids, centres, rtol=0.03)  # sorted by area, like the centres
    assert r.avg_iou > 0.9
    assert r.avg_iou == pytest.approx(avg_iou(wh, r.centroids), abs=1e-6)
    again = kmeans_iou(wh, 3, seed=3)
    np.testing.assert_array_equal(again.centroids, r.centroids)


def test_curve_is_increasing_and_unit_free(voc_wh):
    curve = [r.avg_iou for r in avg_iou_curve(voc_wh, 6, restarts=2)]
    assert all(b > a for a, b in zip(curve, curve[1:]))
    # IoU does not depend on the unit: scaling every box gives the same clustering.
    a = kmeans_iou(voc_wh, 4, restarts=2, seed=5)
    b = kmeans_iou(voc_wh * 0.01, 4, restarts=2, seed=5)
    np.testing.assert_allclose(b.centroids, a.centroids * 0.01, rtol=1e-6)
    assert a.avg_iou == pytest.approx(b.avg_iou, abs=1e-6)


def test_subsampled_restarts_on_large_input():
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(-2, 0.7, (50_000, 2)))
    sub = kmeans_iou(wh, 5, restarts=2, subsample=8_000, seed=0)
    full = kmeans_iou(wh, 5, restarts=2, subsample=50_000, seed=0)
    # The refined subsample solution is as good as clustering every box, within 0.5 IoU points.
    assert abs(sub.avg_iou - full.avg_iou) < 0.005
    assert sub.avg_iou == pytest.approx(avg_iou(wh, sub.centroids), abs=1e-6)


def test_best_possible_recall():
    wh = np.array([[1.0, 1.0], [1.0, 1.0], [10.0, 1.0], [1.0, 10.0]])
    assert best_possible_recall(wh, np.array([[1.0, 1.0]])) == 0.5
    assert best_possible_recall(wh, np.array([[1.0, 1.0], [10.0, 1.0], [1.0, 10.0]])) == 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="box 1 has a non-positive"):
        kmeans_iou(np.array([[1.0, 1.0], [0.0, 2.0]]), 1)
    with pytest.raises(ValueError, match="shape"):
        kmeans_iou(np.ones((3, 3)), 1)
    with pytest.raises(ValueError, match="k must be in"):
        kmeans_iou(np.ones((3, 2)), 5)
    with pytest.raises(ValueError, match="centroid"):
        kmeans_iou(np.ones((3, 2)), 1, centroid="mode")
