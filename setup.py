"""Packaging hook: the wheel carries the top-level `weights/` folder (the shipped models,
cards and licences; the source of truth) inside the package, as `agevision/weights/`."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithWeights(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads weights/ in place
            return
        shutil.copytree(Path(__file__).resolve().parent / "weights", Path(self.build_lib) / "agevision" / "weights",
                        dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithWeights})
