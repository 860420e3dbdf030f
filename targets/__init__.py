"""The shipped device profiles, one TOML file each; installed as the edgekit.targets package (see setup.py)."""
