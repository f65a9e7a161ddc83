"""The two runners of the model: ONNX Runtime (the CPU default) and PyTorch; the export; the traced-model cache."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from agevision.cli import app
from agevision.errors import AgevisionError
from agevision.model.estimator import Estimator
from tests.conftest import REPO, VIDEOS, face_crops, pick

runner = CliRunner()


@pytest.fixture(scope="module")
def crops(utkface):
    from agevision.model.weights import load_card

    return face_crops(pick(utkface, "2", 6) + pick(utkface, "6", 6), load_card(None))


def test_the_shipped_onnx_export_reads_faces_as_pytorch_does(crops):
    onnx, torch_ = Estimator(device="cpu", backend="onnx"), Estimator(device="cpu", backend="torch")
    assert (onnx.backend, torch_.backend) == ("onnx", "torch")
    assert Estimator(device="cpu").backend == "onnx"  # the CPU default
    a, b = onnx.predict(crops), torch_.predict(crops)
    assert np.abs(a.age - b.age).max() < 0.05 and np.abs(a.p_female - b.p_female).max() < 1e-3
    for flip in (True,):
        fa = Estimator(device="cpu", backend="onnx", flip=flip).predict(crops)
        fb = Estimator(device="cpu", backend="torch", flip=flip).predict(crops)
        assert np.abs(fa.age - fb.age).max() < 0.05


def _weights_copy(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(REPO / "weights", folder)
    return folder


def test_an_export_of_other_or_damaged_weights_is_not_used(tmp_path):
    folder = _weights_copy(tmp_path)
    about = json.loads((folder / "agegender.onnx.json").read_text())
    (folder / "agegender.onnx.json").write_text(json.dumps({**about, "tensors_sha256": "0" * 64}))
    assert Estimator(folder, device="cpu").backend == "torch"  # auto: PyTorch runs the weights themselves
    with pytest.raises(AgevisionError, match="exported from other weights"):
        Estimator(folder, device="cpu", backend="onnx")
    (folder / "agegender.onnx.json").write_text(json.dumps(about))
    data = bytearray((folder / "agegender.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (folder / "agegender.onnx").write_bytes(bytes(data))
    with pytest.raises(AgevisionError, match="corrupt"):
        Estimator(folder, device="cpu", backend="onnx")
    assert Estimator(folder, device="cpu").backend == "torch"
    with pytest.raises(AgevisionError, match="backend must be"):
        Estimator(folder, backend="tensorflow")


def test_export_writes_a_checked_onnx_file(tmp_path):
    pytest.importorskip("onnx", reason="agevision export needs the onnx package (pip install 'agevision[export]')")
    folder = _weights_copy(tmp_path)
    for name in ("agegender.onnx", "agegender.onnx.json"):
        (folder / name).unlink()
    assert Estimator(folder, device="cpu").backend == "torch"
    r = runner.invoke(app, ["export", str(folder / "agegender.onnx"), "--weights", str(folder)])
    assert r.exit_code == 0, r.output
    assert "largest difference from PyTorch on 32 UTKFace face crops" in " ".join(r.output.split())
    about = json.loads((folder / "agegender.onnx.json").read_text())
    assert about["max_abs_diff"] < 1e-3 and about["opset"] == 17
    assert Estimator(folder, device="cpu").backend == "onnx"
    r = runner.invoke(app, ["export", str(tmp_path / "model.pt")])
    assert r.exit_code != 0 and "must end in .onnx" in r.output


def test_the_traced_model_is_cached_and_a_broken_cache_rebuilt(tmp_path, monkeypatch, crops):
    monkeypatch.setenv("AGEVISION_CACHE", str(tmp_path / "cache"))
    first = Estimator(device="cpu", backend="torch").predict(crops)
    (cached,) = (tmp_path / "cache").glob("agegender-*.pt")
    second = Estimator(device="cpu", backend="torch").predict(crops)
    assert np.allclose(first.age, second.age, atol=1e-4)
    cached.write_bytes(b"not a torchscript file")
    third = Estimator(device="cpu", backend="torch").predict(crops)
    assert np.allclose(first.age, third.age, atol=1e-4) and cached.stat().st_size > 1000
    monkeypatch.setenv("AGEVISION_CACHE", "off")
    Estimator(device="cpu", backend="torch")
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_video_on_the_cpu_never_loads_torch(tmp_path):
    probe = ("import sys, runpy\nsys.argv = ['agevision', *sys.argv[1:]]\nimport os\nos._exit = sys.exit\n"
             "try:\n    runpy.run_module('agevision', run_name='__main__')\n"
             "finally:\n    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe, "video", str(VIDEOS / "LivePortrait__driving_d0.mp4"),
                        "--out", "o.mp4", "--summary", "p.csv", "--device", "cpu"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.stderr.strip().splitlines()[-1] == "NO-TORCH", r.stderr[-3000:]
    assert (tmp_path / "o.mp4").is_file() and "(1 person)" in r.stderr
