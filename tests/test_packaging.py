"""The wheel a user installs (`pip install .`) carries every file the commands read."""
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_has_templates_sample_and_every_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("crowdprop-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("crowdprop/hit_templates/hit.html", "crowdprop/hit_templates/worker_form.js",
              "crowdprop/report/templates/report.html",
              "crowdprop/data/sample/predictions.json", "crowdprop/data/sample/gt.json",
              "crowdprop/data/sample/campaign.toml", "crowdprop/data/sample/images/000000000315.jpg",
              "crowdprop/data/make_sample.py", "crowdprop/data/LICENSE.faster_coco_eval.txt"):
        assert f in names, f
    # every package of the source tree is in the wheel
    for init in (REPO / "crowdprop").rglob("__init__.py"):
        rel = init.relative_to(REPO).as_posix()
        if "__pycache__" not in rel:
            assert rel in names, rel
    assert not any(n.startswith("hit_templates/") for n in names)  # no stray top-level package
