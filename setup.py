"""Packaging is declared in pyproject.toml; this file adds only what its static settings cannot:
the experiments/ folder ships inside the wheel as fmjax/experiments, so `--config mnist1d/cnn.py`
works without a checkout (fmjax/experiment_files.py)."""

from setuptools import find_namespace_packages, find_packages, setup

EXPERIMENTS = [f"fmjax.{name}" for name in find_namespace_packages(include=["experiments*"])]

setup(packages=find_packages(include=["fmjax*"]) + EXPERIMENTS,
      package_dir={"fmjax.experiments": "experiments"})
