"""crowdprop export: masks by final label as COCO instances with the label and its source as
attributes (the shape CVAT's and Datumaro's COCO importers read), a default file when no -o
is given, and a Label Studio import of the masks to correct in Label Studio's brush RLE."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from pycocotools.coco import COCO

from conftest import GT_JSON, RESULTS_JSON
from crowdprop.crowd.factory import simulated_backend
from crowdprop.campaign.export import SOURCES, final_labels, final_status
from crowdprop.campaign.init import init_run
from crowdprop.campaign.loop import Campaign
from crowdprop.cli import main
from crowdprop.masks import brush, rle


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The sample after 3 rounds with small clusters allowed: masks accepted and rejected both by
    a cluster's verdict and by their own answers, and masks still open."""
    d = tmp_path_factory.mktemp("export")
    (d / "c.toml").write_text("[policy]\nk_pa = 0.0\nmin_cluster_size = 3\nk = 5\n[campaign]\nmax_rounds = 3\n")
    rd = init_run(d / "run", predictions=RESULTS_JSON, gt=GT_JSON, crowd={"kind": "simulated"},
                  config_path=d / "c.toml", progress=False)
    Campaign(rd, simulated_backend(rd), progress=False).run()
    return rd


def by_mask_id(run):
    final, source = final_labels(run)
    ids = run.masks["mask_id"].to_numpy()
    return ({int(i): int(f) for i, f in zip(ids, final)}, {int(i): SOURCES[int(s)] for i, s in zip(ids, source)})


def test_sources_are_what_decided_each_label(run):
    final, source = final_labels(run)
    assert np.array_equal(final, final_status(run))
    combos = set(zip(final.tolist(), [SOURCES[s] for s in source.tolist()]))
    assert combos == {(1, "cluster"), (0, "cluster"), (1, "direct"), (0, "direct"), (-1, "none")}
    # direct: the masks asked about (non-gold, answers in use; audit answers measure decisions and label
    # nothing); their label is their own answer
    ans = run.read_rounds("answers")
    labelling = ~ans["is_gold"] & ans["used"] & (ans["kind"] != "audit" if "kind" in ans else True)
    own = ans[labelling].groupby("mask_row")["label"].mean()
    direct = np.flatnonzero(source == 3)
    assert set(direct.tolist()) == set(own.index.tolist())
    assert np.array_equal(final[own.index.to_numpy()], (own.to_numpy() >= 0.5).astype(np.int8))
    # cluster: members of a cluster accepted (or rejected) in its decisions
    dec = run.read_rounds("decisions")
    forest = run.forest
    for verdict, label in (("accept", 1), ("reject", 0)):
        members = {int(m) for n in dec.loc[dec["decision"] == verdict, "node_id"] for m in forest.members(int(n))}
        rows = set(np.flatnonzero((source == 1) & (final == label)).tolist())
        assert rows and rows <= members


def test_export_without_o_writes_the_default_file(run, capsys):
    assert main(["export", str(run.path)]) == 0
    path = run.path / "export" / "annotations.json"
    assert capsys.readouterr().out.strip() == (f"wrote {int((final_status(run) == 1).sum())} accepted masks as COCO "
                                               f"instances to {path}")
    out = json.loads(path.read_text())
    final, source = by_mask_id(run)
    assert sorted(a["id"] for a in out["annotations"]) == sorted(i for i, f in final.items() if f == 1)
    assert {a["attributes"]["crowdprop_label"] for a in out["annotations"]} == {"accepted"}
    assert all(a["attributes"]["crowdprop_source"] == source[a["id"]] for a in out["annotations"])
    assert {a["attributes"]["crowdprop_source"] for a in out["annotations"]} == {"cluster", "direct"}


@pytest.mark.parametrize("status, code", [("rejected", 0), ("open", -1), ("all", None)])
def test_export_by_status(run, tmp_path, capsys, status, code):
    out_path = tmp_path / f"{status}.json"
    assert main(["export", str(run.path), "--status", status, "-o", str(out_path)]) == 0
    out = json.loads(out_path.read_text())
    final, source = by_mask_id(run)
    want = sorted(i for i, f in final.items() if code is None or f == code)
    assert sorted(a["id"] for a in out["annotations"]) == want
    names = {1: "accepted", 0: "rejected", -1: "open"}
    for a in out["annotations"]:
        assert a["attributes"] == {"crowdprop_label": names[final[a["id"]]], "crowdprop_source": source[a["id"]]}
    assert {a["image_id"] for a in out["annotations"]} == {im["id"] for im in out["images"]}


def test_coco_export_has_the_shape_cvat_imports(run, tmp_path):
    """CVAT imports COCO through Datumaro's importer, which reads per annotation: int id, image_id
    of a listed image, category_id of a listed category, iscrowd, segmentation (compressed RLE:
    size and text counts), and ``attributes`` as a dict of scalar values (to which it adds
    ``score`` and ``is_crowd``, so those names must be free); per image int id, text file_name,
    int height and width. pycocotools reads the same file and decodes every mask."""
    path = tmp_path / "all.json"
    assert main(["export", str(run.path), "--status", "all", "-o", str(path)]) == 0
    data = json.loads(path.read_text())
    images = {im["id"]: im for im in data["images"]}
    cats = {c["id"] for c in data["categories"]}
    assert all(isinstance(im["id"], int) and isinstance(im["file_name"], str) and im["file_name"]
               and isinstance(im["height"], int) and isinstance(im["width"], int) for im in data["images"])
    assert all(isinstance(c["id"], int) and isinstance(c["name"], str) for c in data["categories"])
    assert len(data["annotations"]) == len(run.masks)
    for a in data["annotations"]:
        assert isinstance(a["id"], int) and a["image_id"] in images and a["category_id"] in cats
        assert a["iscrowd"] == 0 and isinstance(a["score"], float) and len(a["bbox"]) == 4
        seg = a["segmentation"]
        assert seg["size"] == [images[a["image_id"]]["height"], images[a["image_id"]]["width"]]
        assert isinstance(seg["counts"], str)
        attrs = a["attributes"]
        assert set(attrs) == {"crowdprop_label", "crowdprop_source"}
        assert all(isinstance(v, str) for v in attrs.values())
    coco = COCO(str(path))
    assert len(coco.getAnnIds()) == len(run.masks)
    a = data["annotations"][17]
    assert int(coco.annToMask(coco.loadAnns([a["id"]])[0]).sum()) == round(a["area"])
    assert coco.loadAnns([a["id"]])[0]["attributes"] == a["attributes"]


# ----------------------------------------------------------------------------- Label Studio


def test_labelstudio_import_of_rejected_and_open_masks(run, capsys):
    assert main(["export", str(run.path), "--format", "labelstudio"]) == 0
    path = run.path / "export" / "labelstudio.json"
    assert str(path) in capsys.readouterr().out
    tasks = json.loads(path.read_text())
    final, source = by_mask_id(run)
    masks = run.masks.set_index("mask_id")
    names = dict(zip(run.table("categories")["id"], run.table("categories")["name"]))
    urls = dict(zip(run.table("images")["id"], run.table("images")["coco_url"]))
    seen = []
    for task in tasks:
        iid = task["data"]["crowdprop_image_id"]
        assert task["data"]["image"] == urls[iid] and urls[iid].startswith("http://images.cocodataset.org/")
        listed = {m["mask_id"]: m for m in task["data"]["crowdprop_masks"]}
        (pred,) = task["predictions"]
        for r in pred["result"]:
            mid = int(r["id"].removeprefix("mask-"))
            m = masks.loc[mid]
            assert m["image_id"] == iid and r["type"] == "brushlabels"
            assert (r["from_name"], r["to_name"]) == ("label", "image")
            assert (r["original_height"], r["original_width"]) == (m["height"], m["width"])
            assert r["value"]["format"] == "rle" and r["value"]["brushlabels"] == [names[m["category_id"]]]
            dense = rle.decode(m["rle"], m["height"], m["width"])
            assert np.array_equal(brush.decode(r["value"]["rle"], m["height"], m["width"]), dense)
            assert listed[mid]["crowdprop_label"] == {0: "rejected", -1: "open"}[final[mid]]
            assert listed[mid]["crowdprop_source"] == source[mid]
            seen.append(mid)
    assert sorted(seen) == sorted(i for i, f in final.items() if f in (0, -1))
    # the labeling config names the tags the regions use and every class
    cfg = ET.fromstring((run.path / "export" / "labelstudio.xml").read_text())
    assert cfg.find("Image").get("name") == "image"
    bl = cfg.find("BrushLabels")
    assert (bl.get("name"), bl.get("toName")) == ("label", "image")
    assert {lab.get("value") for lab in bl.findall("Label")} == set(names.values())


def test_labelstudio_options(run, tmp_path, capsys):
    out = tmp_path / "acc.json"
    assert main(["export", str(run.path), "--format", "labelstudio", "--status", "accepted", "-o", str(out),
                 "--image-url", "/data/local-files/?d=coco/"]) == 0
    tasks = json.loads(out.read_text())
    files = dict(zip(run.table("images")["id"], run.table("images")["file_name"]))
    assert all(t["data"]["image"] == "/data/local-files/?d=coco/" + files[t["data"]["crowdprop_image_id"]]
               for t in tasks)
    assert sum(len(t["predictions"][0]["result"]) for t in tasks) == int((final_status(run) == 1).sum())
    assert (tmp_path / "acc.xml").exists()
    capsys.readouterr()
    assert main(["export", str(run.path), "--image-url", "x/"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "crowdprop export: error: command line: field '--image-url': applies to --format labelstudio only"


# ----------------------------------------------------------------------------- brush RLE


def stream(*fields: tuple[int, int]) -> str:
    return "".join(format(v, f"0{w}b") for v, w in fields)


HEADER = ((7, 5), (2, 4), (3, 4), (7, 4), (15, 4))  # 8-bit words; run fields of 3, 4, 8 and 16 bits


def bits(data: list[int]) -> str:
    return "".join(format(b, "08b") for b in data)


def test_brush_encoding_bit_by_bit():
    """Two pixels, off then on: 8 RGBA values, a run of 4 zeros and a run of 4 x 255 in the
    3-bit run field; padded with 7 zero bits to 11 bytes."""
    got = brush.encode(np.array([[0, 1]]))
    body = stream((8, 32), *HEADER, (1, 1), (0, 2), (3, 3), (0, 8), (1, 1), (0, 2), (3, 3), (255, 8))
    assert len(body) == 81 and bits(got) == body + "0" * 7
    # a run of 65,540 values: a full 16-bit piece of 65,536, then the rest, also in the 16-bit field
    got = brush.encode(np.zeros((1, 16385)))
    body = stream((65540, 32), *HEADER, (1, 1), (3, 2), (65535, 16), (0, 8), (1, 1), (3, 2), (3, 16), (0, 8))
    assert bits(got) == body + "0" * (8 - len(body) % 8)
    # 20 values of 255 in the 8-bit run field: 72 bits, a whole byte already, still padded with a zero byte
    body = stream((20, 32), *HEADER, (1, 1), (2, 2), (19, 8), (255, 8))
    assert len(body) == 72 and bits(brush.encode(np.ones((1, 5)))) == body + "0" * 8


def test_brush_round_trip():
    rng = np.random.default_rng(7)
    cases = [np.ones((3, 5)), np.zeros((300, 400)), rng.random((37, 53)) < 0.5, np.eye(40)]
    square = np.zeros((400, 500))
    square[50:350, 60:460] = 1  # runs of 400 px = 1,600 values (16-bit field) and long background runs
    cases.append(square)
    for m in cases:
        enc = brush.encode(m)
        assert all(0 <= b < 256 for b in enc)
        assert np.array_equal(brush.decode(enc, *m.shape), (m > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="ends inside a block"):
        brush.decode(brush.encode(square)[:40], 400, 500)
    with pytest.raises(ValueError, match="holds 8 values"):
        brush.decode(brush.encode(np.ones((1, 2))), 2, 2)
