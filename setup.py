"""Package layout pyproject.toml cannot state: the device profiles live in the top-level targets/ folder
(where users look for them) and install as the edgekit.targets package."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["edgekit", "edgekit.*"]), "edgekit.targets"],
    package_dir={"edgekit.targets": "targets"},
)
