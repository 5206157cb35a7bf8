import numpy as np
import pandas as pd
import pytest

from crowdprop.errors import InputError
from crowdprop.features import clustering_embedding, load_features, resize_area, shape_features
from crowdprop.masks import load_ground_truth, load_predictions, rle

from conftest import GT_JSON, RESULTS_JSON


def _table(masks: list[np.ndarray], with_boxes: bool = True) -> pd.DataFrame:
    counts = [rle.encode(m) for m in masks]
    hs = [m.shape[0] for m in masks]
    ws = [m.shape[1] for m in masks]
    df = pd.DataFrame({"mask_id": np.arange(100, 100 + len(masks)), "rle": counts, "height": hs, "width": ws})
    if with_boxes:
        b = rle.bbox(counts, hs, ws)
        df["bbox_x"], df["bbox_y"], df["bbox_w"], df["bbox_h"] = b.T
    return df


# --- shape features -----------------------------------------------------------------


def test_square_mask_grid_is_all_ones_and_scalars():
    m = np.zeros((20, 30), np.uint8)
    m[5:13, 7:17] = 1  # 8 tall, 10 wide
    f = shape_features(_table([m]), grid=16)
    assert f.shape == (1, 16 * 16 + 2) and f.dtype == np.float32
    np.testing.assert_allclose(f[0, :256], 1.0, atol=1e-6)
    assert f[0, 256] == pytest.approx(np.log(80))
    assert f[0, 257] == pytest.approx(np.log(10 / 8))


def test_l_shape_known_grid():
    m = np.zeros((12, 14), np.uint8)
    box = np.zeros((8, 8), np.uint8)
    box[:, 0:3] = 1  # vertical bar, 3 wide
    box[5:8, :] = 1  # bottom bar, 3 tall
    m[2:10, 4:12] = box
    f = shape_features(_table([m]), grid=4)
    # cell (y, x) averages rows 2y..2y+1 and columns 2x..2x+1 of the box (worked by hand)
    expected = np.array([
        [1, 0.5, 0, 0],
        [1, 0.5, 0, 0],
        [1, 0.75, 0.5, 0.5],
        [1, 1, 1, 1],
    ])
    np.testing.assert_allclose(f[0, :16].reshape(4, 4), expected, atol=1e-6)
    assert f[0, 16] == pytest.approx(np.log(39))  # 8*3 + 3*5 pixels
    assert f[0, 17] == pytest.approx(0.0)  # square box


def test_boxes_computed_when_columns_absent():
    rng = np.random.default_rng(3)
    masks = []
    for _ in range(5):
        m = np.zeros((25, 19), np.uint8)
        y, x = rng.integers(0, 10, 2)
        m[y:y + rng.integers(1, 15), x:x + rng.integers(1, 9)] = rng.random() > -1
        m[y, x] = 1
        masks.append(m)
    a = shape_features(_table(masks, with_boxes=True), grid=8)
    b = shape_features(_table(masks, with_boxes=False), grid=8)
    np.testing.assert_array_equal(a, b)


def _reference_resize(a: np.ndarray, g: int) -> np.ndarray:
    """Area average by upsampling each pixel g times, then g x g ... block means."""
    h, w = a.shape
    up = np.kron(a.astype(np.float64), np.ones((g, g)))  # (h*g, w*g): each output cell = h x w block
    return up.reshape(g, h, g, w).mean(axis=(1, 3))


@pytest.mark.parametrize("shape", [(7, 5), (16, 16), (3, 20), (33, 9), (1, 1)])
def test_resize_area_matches_block_mean_reference(shape):
    a = np.random.default_rng(sum(shape)).random(shape)
    np.testing.assert_allclose(resize_area(a, 6), _reference_resize(a, 6), atol=1e-6)


@pytest.fixture(scope="module")
def real_masks():
    return load_predictions(RESULTS_JSON, load_ground_truth(GT_JSON))


def test_real_masks_area_and_grid(real_masks):
    f = shape_features(real_masks, grid=16)
    np.testing.assert_allclose(f[:, 256], np.log(real_masks["area"].to_numpy()), rtol=1e-6)
    np.testing.assert_allclose(f[:, 257], np.log(real_masks["bbox_w"] / real_masks["bbox_h"]), rtol=1e-5, atol=1e-6)
    assert f[:, :256].min() >= 0.0 and f[:, :256].max() <= 1.0
    # the grid's mean coverage times the box area is the pixel count (area averaging keeps mass)
    box_area = real_masks["bbox_w"] * real_masks["bbox_h"]
    np.testing.assert_allclose(f[:, :256].mean(axis=1) * box_area, real_masks["area"], rtol=1e-4)


def test_decode_box_equals_crop_of_full_decode(real_masks):
    rng = np.random.default_rng(0)
    for c, h, w in zip(real_masks["rle"][:200], real_masks["height"][:200], real_masks["width"][:200]):
        full = rle.decode(c, h, w)
        x0, x1 = sorted(rng.integers(-3, w + 3, 2))
        y0, y1 = sorted(rng.integers(-3, h + 3, 2))
        got = rle.decode_box(c, h, w, (x0, y0, x1, y1))
        np.testing.assert_array_equal(got, full[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)])


def _runs_from_pixels(m: np.ndarray) -> list[int]:
    flat = m.ravel(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.r_[0, change, flat.size]).tolist()
    return ([0] + runs) if flat.size and flat[0] == 1 else runs


def test_runs_many_matches_decoded_pixels(real_masks):
    rng = np.random.default_rng(1)
    synthetic = [np.zeros((5, 4), np.uint8), np.ones((5, 4), np.uint8), np.eye(7, dtype=np.uint8),
                 (rng.random((30, 20)) > 0.5).astype(np.uint8)]
    counts = real_masks["rle"].tolist()[:100] + [rle.encode(m) for m in synthetic]
    shapes = list(zip(real_masks["height"][:100], real_masks["width"][:100])) + [m.shape for m in synthetic]
    runs, offs = rle.runs_many(counts)
    assert len(offs) == len(counts) + 1
    for i, (c, (h, w)) in enumerate(zip(counts, shapes)):
        assert runs[offs[i]:offs[i + 1]].tolist() == _runs_from_pixels(rle.decode(c, h, w))


# --- load_features -------------------------------------------------------------------


@pytest.fixture
def masks4():
    return pd.DataFrame({"mask_id": [11, 12, 13, 14]})


def _err(path, masks) -> InputError:
    with pytest.raises(InputError) as ei:
        load_features(path, masks)
    return ei.value


def test_npy_roundtrip(tmp_path, masks4):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "f.npy", x)
    got = load_features(tmp_path / "f.npy", masks4)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x)


def test_npy_wrong_row_count(tmp_path, masks4):
    np.save(tmp_path / "f.npy", np.zeros((3, 2)))
    e = _err(tmp_path / "f.npy", masks4)
    assert "f.npy" in str(e) and "has 3 rows" in str(e) and "has 4" in str(e)


def test_npy_nan_names_row_and_mask_id(tmp_path, masks4):
    x = np.zeros((4, 3))
    x[2, 1] = np.nan
    np.save(tmp_path / "f.npy", x)
    e = _err(tmp_path / "f.npy", masks4)
    assert e.record == "row 2 (mask_id=13)" and e.field == "column 1" and "NaN" in e.message


def test_npy_inf_and_float32_overflow(tmp_path, masks4):
    x = np.zeros((4, 3))
    x[3, 0] = 1e300  # finite in float64, inf in float32
    np.save(tmp_path / "f.npy", x)
    e = _err(tmp_path / "f.npy", masks4)
    assert e.record == "row 3 (mask_id=14)" and "infinite" in e.message


def test_npy_non_numeric_and_1d(tmp_path, masks4):
    np.save(tmp_path / "s.npy", np.array([["a", "b"]] * 4))
    assert "numeric" in _err(tmp_path / "s.npy", masks4).message
    np.save(tmp_path / "v.npy", np.zeros(4))
    assert "2-D" in _err(tmp_path / "v.npy", masks4).message


def test_missing_unreadable_unknown(tmp_path, masks4):
    assert "not found" in str(_err(tmp_path / "nope.npy", masks4))
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    assert "cannot read" in _err(tmp_path / "bad.npy", masks4).message
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nonsense")
    assert "cannot read" in _err(tmp_path / "bad.parquet", masks4).message
    (tmp_path / "f.csv").write_text("1,2\n")
    assert "unknown feature file type" in _err(tmp_path / "f.csv", masks4).message


def test_parquet_list_column_aligned_by_mask_id(tmp_path, masks4):
    df = pd.DataFrame({"mask_id": [14, 12, 11, 13, 99], "features": [[4.0, 40], [2.0, 20], [1.0, 10], [3.0, 30], [9, 9]]})
    df.to_parquet(tmp_path / "f.parquet")
    got = load_features(tmp_path / "f.parquet", masks4)  # mask 99 is not in the table: ignored
    np.testing.assert_array_equal(got, [[1, 10], [2, 20], [3, 30], [4, 40]])


def test_parquet_f_columns_aligned(tmp_path, masks4):
    df = pd.DataFrame({"mask_id": [13, 11, 14, 12], "f0": [3, 1, 4, 2], "f1": [0.3, 0.1, 0.4, 0.2]})
    df.to_parquet(tmp_path / "f.parquet")
    np.testing.assert_allclose(load_features(tmp_path / "f.parquet", masks4)[:, 1], [0.1, 0.2, 0.3, 0.4], rtol=1e-6)


def test_parquet_errors(tmp_path, masks4):
    p = tmp_path / "f.parquet"
    pd.DataFrame({"mask_id": [11, 12, 12, 14], "f0": [1.0, 2, 3, 4]}).to_parquet(p)
    e = _err(p, masks4)
    assert e.field == "mask_id" and "duplicate" in e.message and "mask_id=12" in e.record

    pd.DataFrame({"mask_id": [11, 12, 14], "f0": [1.0, 2, 4]}).to_parquet(p)
    e = _err(p, masks4)
    assert e.record == "mask_id=13" and "no features" in e.message

    pd.DataFrame({"mask_id": [11, 12, 13, 14], "features": [[1.0, 2], [1.0, 2], [1.0], [1.0, 2]]}).to_parquet(p)
    e = _err(p, masks4)
    assert e.record == "row 2 (mask_id=13)" and e.field == "features" and "has 1 values, expected 2" in e.message

    pd.DataFrame({"mask_id": [11, 12, 13, 14], "f0": [1.0, 2, 3, 4], "f1": ["a", "b", "c", "d"]}).to_parquet(p)
    e = _err(p, masks4)
    assert e.field == "f1" and "non-numeric" in e.message

    pd.DataFrame({"mask_id": [11, 12, 13, 14], "f0": [1.0, 2, 3, 4], "f2": [1.0, 2, 3, 4]}).to_parquet(p)
    assert _err(p, masks4).field == "f1"

    pd.DataFrame({"mask_id": [11, 12, 13, 14], "f0": [1.0, np.inf, 3, 4]}).to_parquet(p)
    e = _err(p, masks4)
    assert e.record == "row 1 (mask_id=12)" and e.field == "f0"

    pd.DataFrame({"id": [11, 12, 13, 14], "f0": [1.0, 2, 3, 4]}).to_parquet(p)
    assert _err(p, masks4).field == "mask_id"

    pd.DataFrame({"mask_id": [11, 12, 13, 14], "other": [1.0, 2, 3, 4]}).to_parquet(p)
    assert "no feature columns" in _err(p, masks4).message


# --- clustering embedding -------------------------------------------------------------


def _pairwise_sq(e: np.ndarray) -> np.ndarray:
    e = e.astype(np.float64)
    return ((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)


def test_quality_weight_separates_equal_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    x[1] = x[0]
    q = rng.random(30)
    q[0], q[1] = 0.2, 0.9
    dist = []
    for w in [0.0, 0.5, 1.0, 2.0]:
        e = clustering_embedding(x, q, quality_weight=w, pca_dims=0, rng=np.random.default_rng(1))
        dist.append(np.linalg.norm(e[0] - e[1]))
    assert dist[0] == pytest.approx(0.0, abs=1e-6)
    assert dist[1] < dist[2] < dist[3]
    # the quality term is w * |q0 - q1| / sqrt(2 var(q))
    assert dist[2] == pytest.approx(0.7 / np.sqrt(2 * q.var()), rel=1e-5)


def test_both_terms_have_unit_mean_square_pairwise_distance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 6)) * [1, 10, 100, 0.1, 5, 0]  # one constant dimension
    q = rng.random(40)
    e = clustering_embedding(x, q, quality_weight=1.5, pca_dims=0, rng=np.random.default_rng(0))
    assert e.shape == (40, 7)
    assert _pairwise_sq(e[:, :6]).mean() == pytest.approx(1.0, rel=1e-5)
    assert _pairwise_sq(e[:, 6:]).mean() == pytest.approx(1.5 ** 2, rel=1e-5)
    # per-dimension standardization: every non-constant dimension contributes equally
    contrib = [_pairwise_sq(e[:, k:k + 1]).mean() for k in range(6)]
    np.testing.assert_allclose(contrib[:5], 0.2, rtol=1e-4)
    assert contrib[5] == 0.0


def test_pca_keeps_distances_of_low_rank_features():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 12))  # rank 3 in 12-d
    q = rng.random(200)
    full = clustering_embedding(x, q, quality_weight=1.0, pca_dims=0, rng=np.random.default_rng(0))
    red = clustering_embedding(x, q, quality_weight=1.0, pca_dims=3, rng=np.random.default_rng(0))
    assert red.shape == (200, 4)
    np.testing.assert_allclose(_pairwise_sq(red), _pairwise_sq(full), rtol=1e-3, atol=1e-4)


def test_embedding_deterministic_and_validates():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 40))
    q = rng.random(300)
    a = clustering_embedding(x, q, quality_weight=1.0, pca_dims=8, rng=np.random.default_rng(7))
    b = clustering_embedding(x, q, quality_weight=1.0, pca_dims=8, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    q[3] = np.nan
    with pytest.raises(ValueError, match="quality"):
        clustering_embedding(x, q, quality_weight=1.0, pca_dims=8, rng=np.random.default_rng(7))
