"""Shim so that legacy `python setup.py develop` and old pip versions work; see pyproject.toml."""
from setuptools import setup

setup()
