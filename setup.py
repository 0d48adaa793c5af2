"""Packages that pyproject.toml cannot list by discovery alone.

The repo's top-level `components/` installs as `wallaroo_pulumi.components`
(`package-dir` in pyproject.toml); automatic discovery only finds folders that sit
where their import name says, so that package is named here, with its BYOP model
folders (plain folders of Python, uploaded as they are) listed as namespace packages
so setuptools ships their code without warning that they are not packages.
"""

from setuptools import find_namespace_packages, find_packages, setup

byop = [f"wallaroo_pulumi.components.{p}" for p in find_namespace_packages("components", exclude=["*__pycache__*"])]
setup(packages=[*find_packages(include=["wallaroo_pulumi*", "mac*"]), "wallaroo_pulumi.components", *byop])
