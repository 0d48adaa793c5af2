"""Packages that pyproject.toml cannot list by discovery alone.

The repo's top-level `components/` installs as `wallaroo_pulumi.components`
(`package-dir` in pyproject.toml); automatic discovery only finds folders that sit
where their import name says, so that one package is named here.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["wallaroo_pulumi*", "mac*"]), "wallaroo_pulumi.components"])
