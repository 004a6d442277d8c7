"""footfall_build: a PEP 517 / PEP 660 build backend for the footfall package, standard library only.

It writes a pure-Python wheel (footfall-<version>-py3-none-any.whl) holding
the ``footfall`` package, an sdist, and an editable wheel (a .pth file naming
this directory). Reproducible: entries are sorted and dated 1980-01-01.
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "footfall"
PACKAGE = "footfall"
SUMMARY = "Python client of footfall, the realtime visitor-count gateway (standard library only)"
REQUIRES_PYTHON = ">=3.9"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _version():
    with open(os.path.join(ROOT, PACKAGE, "_client.py"), encoding="utf-8") as f:
        m = re.search(r'^VERSION = "([^"]+)"$', f.read(), re.M)
    if not m:
        raise RuntimeError("footfall_build: no VERSION in footfall/_client.py")
    return m.group(1)


def _metadata():
    readme = ""
    path = os.path.join(ROOT, "README.md")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            readme = f.read()
    return (
        "Metadata-Version: 2.1\n"
        "Name: %s\n"
        "Version: %s\n"
        "Summary: %s\n"
        "Requires-Python: %s\n"
        "Classifier: Programming Language :: Python :: 3\n"
        "Classifier: Framework :: Django\n"
        "Description-Content-Type: text/markdown\n"
        "\n%s" % (NAME, _version(), SUMMARY, REQUIRES_PYTHON, readme)
    )


def _dist_info():
    return "%s-%s.dist-info" % (NAME, _version())


def _wheel_name():
    return "%s-%s-py3-none-any.whl" % (NAME, _version())


def _package_files():
    """Yields (path in the wheel, path on disk) for every file of the package, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, PACKAGE)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if fn.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(dirpath, fn)
            out.append((os.path.relpath(full, ROOT).replace(os.sep, "/"), full))
    return out


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return "%s,sha256=%s,%d" % (name, digest, len(data))


def _write_wheel(wheel_directory, files):
    """Writes a wheel holding files (name -> bytes) plus its dist-info; returns its file name."""
    dist_info = _dist_info()
    files = dict(files)
    files[dist_info + "/METADATA"] = _metadata().encode("utf-8")
    files[dist_info + "/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: footfall_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ).encode("ascii")
    files[dist_info + "/top_level.txt"] = (PACKAGE + "\n").encode("ascii")
    record = [_record_line(n, d) for n, d in sorted(files.items())]
    record.append(dist_info + "/RECORD,,")
    files[dist_info + "/RECORD"] = ("\n".join(record) + "\n").encode("utf-8")
    name = _wheel_name()
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as zf:
        # RECORD goes last, as the wheel spec recommends.
        for n in sorted(files, key=lambda n: (n.endswith("/RECORD"), n)):
            info = zipfile.ZipInfo(n, ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[n])
    return name


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# PEP 517 hooks.


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    dist_info = _dist_info()
    os.makedirs(os.path.join(metadata_directory, dist_info), exist_ok=True)
    with open(os.path.join(metadata_directory, dist_info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    return dist_info


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, {n: _read(p) for n, p in _package_files()})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    # A .pth file puts this directory on sys.path, so edits to footfall/ take effect at once.
    return _write_wheel(wheel_directory, {"__editable__.%s.pth" % NAME: (ROOT + "\n").encode("utf-8")})


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (NAME, _version())
    name = base + ".tar.gz"
    members = [("pyproject.toml", os.path.join(ROOT, "pyproject.toml")),
               ("_build/footfall_build.py", os.path.abspath(__file__))]
    if os.path.exists(os.path.join(ROOT, "README.md")):
        members.append(("README.md", os.path.join(ROOT, "README.md")))
    members += _package_files()
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tf:
        pkg_info = _metadata().encode("utf-8")
        for arcname, data in [("PKG-INFO", pkg_info)] + [(a, _read(p)) for a, p in members]:
            info = tarfile.TarInfo(base + "/" + arcname)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 315532800  # 1980-01-01, as in the wheel
            tf.addfile(info, io.BytesIO(data))
    return name
