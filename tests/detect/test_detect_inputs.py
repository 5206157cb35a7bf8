"""Validation of label maps and checkpoints; the projection; image listing."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torchvision = pytest.importorskip("torchvision")
import torch  # noqa: E402

from crowdprop.detect import DetectorSpec, list_images, load_label_map, load_or_create_projection  # noqa: E402
from crowdprop.detect.model import build_detector, resolve_label_map  # noqa: E402
from crowdprop.detect.projection import FEATURE_DIM, ROI_DIM  # noqa: E402
from crowdprop.errors import InputError, StateError  # noqa: E402

from .conftest import LISTING, make_model  # noqa: E402

pytestmark = pytest.mark.detect


@pytest.mark.parametrize("content, message", [
    ('["person", "car"]', ": must be a JSON object mapping class index to name"),
    ("{}", ": no classes: the object is empty"),
    ('{"1": "person", "x": "car"}', ": field 'x': class index must be an integer"),
    ('{"1.5": "person"}', ": field '1.5': class index must be an integer"),
    ('{"0": "background", "1": "person"}', ": field '0': index 0 is the background; classes start at 1"),
    ('{"-1": "person"}', ": field '-1': class index must be >= 1"),
    ('{"1": ""}', ": field '1': name must be a non-empty string, got ''"),
    ('{"1": "  "}', ": field '1': name must be a non-empty string"),
    ('{"1": 7}', ": field '1': name must be a non-empty string, got 7"),
    ('{"1": "a", "01": "b"}', ": field '01': class index 1 appears twice"),
    ('{"1": "a", "3": "c"}', ": class indices must be 1..3 without gaps; missing [2]"),
    ('{"1": "a",', ": line 1 column 11: malformed JSON"),
])
def test_bad_label_maps_are_refused_naming_file_and_field(tmp_path, content, message):
    p = tmp_path / "labels.json"
    p.write_text(content)
    with pytest.raises(InputError) as e:
        load_label_map(p)
    assert str(e.value).startswith(f"{p}{message}")
    assert "\n" not in str(e.value)


def test_missing_label_map(tmp_path):
    with pytest.raises(InputError, match="labels.json: file not found"):
        load_label_map(tmp_path / "labels.json")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1).filter(lambda s: s.strip() == s and s), min_size=1, max_size=12))
def test_valid_label_maps_round_trip(tmp_path_factory, names):
    p = tmp_path_factory.mktemp("lm") / "labels.json"
    order = np.random.default_rng(len(names)).permutation(len(names))  # key order must not matter
    p.write_text(json.dumps({str(i + 1): names[i] for i in order}))
    lm = load_label_map(p)
    assert lm.num_classes == len(names) + 1
    assert lm.names == {i + 1: n for i, n in enumerate(names)}
    cats = lm.categories()
    assert cats["id"].tolist() == list(range(1, len(names) + 1)) and cats["name"].tolist() == names


def test_default_weights_name_the_coco_categories_without_downloading():
    lm = resolve_label_map(DetectorSpec(weights="DEFAULT"))
    assert lm.num_classes == 91
    assert len(lm.names) == 80
    assert (lm.names[1], lm.names[3], lm.names[90]) == ("person", "car", "toothbrush")
    assert 12 not in lm.names  # an id COCO does not use


def test_checkpoint_needs_a_label_map(tmp_path):
    with pytest.raises(InputError, match="needs a label map"):
        resolve_label_map(DetectorSpec(weights=str(tmp_path / "m.pt")))


def _spec(ckpt, labels):
    return DetectorSpec(weights=str(ckpt), labels=str(labels), min_size=320, max_size=320)


def _proj():
    return np.zeros((ROI_DIM, FEATURE_DIM), np.float32)


def test_checkpoint_with_other_class_count_is_refused(checkpoint, tmp_path):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"1": "a", "2": "b", "3": "c"}))
    with pytest.raises(InputError) as e:
        build_detector(_spec(checkpoint, labels), projection=_proj())
    assert str(e.value) == (
        f"{checkpoint}: field 'roi_heads.box_predictor.cls_score.weight': shape [3, 1024] does not match "
        f"the model's [4, 1024] (the checkpoint has 3 classes, the label map {labels} 4 with background)")


def test_checkpoint_missing_keys_is_refused(tmp_path, labels_json):
    sd = make_model().state_dict()
    del sd["backbone.body.conv1.weight"]
    p = tmp_path / "m.pt"
    torch.save(sd, p)
    with pytest.raises(InputError, match=r"m\.pt: field 'backbone\.body\.conv1\.weight': missing from the "
                                         r"checkpoint \(1 keys missing"):
        build_detector(_spec(p, labels_json), projection=_proj())


@pytest.mark.parametrize("payload, message", [
    (b"not a checkpoint", "not a torch checkpoint"),
    (None, "not a state dict"),
])
def test_non_checkpoints_are_refused(tmp_path, labels_json, payload, message):
    p = tmp_path / "m.pt"
    if payload is None:
        torch.save([1, 2, 3], p)
    else:
        p.write_bytes(payload)
    with pytest.raises(InputError, match=f"m.pt: {message}"):
        build_detector(_spec(p, labels_json), projection=_proj())
    with pytest.raises(InputError, match="checkpoint file not found"):
        build_detector(_spec(tmp_path / "none.pt", labels_json), projection=_proj())


def test_projection_is_seeded_stored_and_reused(tmp_path):
    a = load_or_create_projection(tmp_path / "a", seed=3)
    b = load_or_create_projection(tmp_path / "b", seed=3)
    c = load_or_create_projection(tmp_path / "c", seed=4)
    assert a.shape == (ROI_DIM, FEATURE_DIM) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() == pytest.approx(1 / np.sqrt(FEATURE_DIM), rel=0.01)
    assert np.array_equal(load_or_create_projection(tmp_path / "a", seed=99), a)  # stored one wins
    np.save(tmp_path / "a" / "projection.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(StateError, match="projection must be float32 of shape"):
        load_or_create_projection(tmp_path / "a")


def test_listing_is_recursive_sorted_and_ignores_other_files(images_dir, tmp_path):
    assert list_images(images_dir) == LISTING
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path)
