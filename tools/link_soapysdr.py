"""Expose Debian's SoapySDR Python bindings inside the virtual environment.

Only ``SoapySDR.py`` and ``_SoapySDR*.so`` are linked into the venv's site-packages, not the rest of
Debian's dist-packages (which would mix Debian's numpy & co. into the venv). Idempotent; a no-op with a
warning when the Debian package is absent or built for another Python.
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig

DEBIAN_DIRS = ("/usr/lib/python3/dist-packages", f"/usr/lib/python3.{sys.version_info.minor}/dist-packages")


def main() -> int:
    site = sysconfig.get_paths()["purelib"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    for d in DEBIAN_DIRS:
        py = os.path.join(d, "SoapySDR.py")
        libs = [
            p for p in glob.glob(os.path.join(d, "_SoapySDR*.so")) if p.endswith((suffix, "_SoapySDR.so"))
        ]
        if os.path.exists(py) and libs:
            for src in [py, *libs]:
                dst = os.path.join(site, os.path.basename(src))
                if os.path.islink(dst) or os.path.exists(dst):
                    os.remove(dst)
                os.symlink(src, dst)
            print(f"SoapySDR bindings linked into {site}")
            return 0
    print(
        "warning: Debian's python3-soapysdr bindings for this Python were not found; "
        "the soapy: source will be unavailable",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
