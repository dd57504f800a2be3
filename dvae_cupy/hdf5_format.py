"""The one check our HDF5 files (data sets and checkpoints) share: whose format and version."""


def check_format(f, path, expected_format, expected_version):
    """Raise ValueError naming `path` unless the open file's root attributes say it is
    `expected_format` at `expected_version`."""
    if f.attrs.get("format") != expected_format:
        raise ValueError(f"{path}: format attribute is {f.attrs.get('format')!r}, "
                         f"expected {expected_format!r}")
    if f.attrs.get("version") != expected_version:
        raise ValueError(f"{path}: unsupported version {f.attrs.get('version')!r}, "
                         f"this reader knows version {expected_version}")
