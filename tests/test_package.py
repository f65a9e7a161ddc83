"""agevision as a package: a wheel that works with no repo beside it, and a fast start."""

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO, VIDEOS


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_wheel_carries_the_weights_and_runs_from_anywhere(tmp_path):
    wheels, target, away = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    away.mkdir()
    source = tmp_path / "source"  # a clean copy: no build/ folder of an earlier build can leak in
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", ".cache", "runs", "out",
                                                                 "*.egg-info", "__pycache__", ".*_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = wheels.glob("agevision-*.whl")
    with zipfile.ZipFile(wheel) as z:
        inside = {n.removeprefix("agevision/weights/"): _sha(z.read(n)) for n in z.namelist()
                  if n.startswith("agevision/weights/")}
    shipped = {p.name: _sha(p.read_bytes()) for p in (REPO / "weights").iterdir() if p.is_file()}
    assert inside == shipped  # every model, card and licence, byte for byte
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import agevision.defaults as d; print(d.WEIGHTS_DIR)"],
                           cwd=away, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(target / "agevision" / "weights"), where.stderr
    r = subprocess.run([sys.executable, "-m", "agevision", "video", str(VIDEOS / "LivePortrait__driving_d0.mp4"),
                        "--summary", "people.csv"], cwd=away, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(1 person)" in r.stderr and (away / "people.csv").is_file()


@pytest.mark.parametrize("args", [["image", "/nonexistent.jpg"], ["video", "/nonexistent.mp4", "--out", "x.mp4"],
                                  ["video", "README.md", "--out", "x.txt"], ["webcam", "--camera", "9"],
                                  ["report", "/nonexistent.jsonl", "--out", "r.html"], ["--version"]])
def test_bad_input_is_reported_before_torch_loads(args, tmp_path):
    """A missing file or a bad option is said at once: torch (seconds to import) is not loaded."""
    probe = ("import sys, runpy\nsys.argv = ['agevision', *sys.argv[1:]]\nimport os\nos._exit = sys.exit\n"
             "try:\n    runpy.run_module('agevision', run_name='__main__')\n"
             "finally:\n    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == "NO-TORCH", r.stderr
    if args != ["--version"]:
        assert r.returncode != 0 and lines[-2].startswith("error:") and "Traceback" not in r.stderr
    else:
        assert r.returncode == 0 and r.stdout.startswith("agevision ")
