"""Release: manifests, signatures and bundles (device-side code: no torch)."""
