"""Packaging: the stdlib build backend's wheel and sdist, `pip install` offline, Python 3.9 syntax, no third-party imports."""

import ast
import base64
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
import zipfile

from tests import support

PACKAGE_DIR = os.path.join(support.CLIENT_DIR, "footfall")


def package_sources():
    return sorted(os.path.join(PACKAGE_DIR, f) for f in os.listdir(PACKAGE_DIR) if f.endswith(".py"))


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def backend():
    sys.path.insert(0, os.path.join(support.CLIENT_DIR, "_build"))
    try:
        return importlib.import_module("footfall_build")
    finally:
        sys.path.pop(0)


class BackendTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="footfall-pkg-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.be = backend()

    def test_no_build_requirements(self):
        self.assertEqual(self.be.get_requires_for_build_wheel(), [])
        self.assertEqual(self.be.get_requires_for_build_sdist(), [])
        self.assertEqual(self.be.get_requires_for_build_editable(), [])

    def test_wheel(self):
        import footfall
        name = self.be.build_wheel(self.tmp)
        self.assertEqual(name, "footfall-%s-py3-none-any.whl" % footfall.__version__)
        with zipfile.ZipFile(os.path.join(self.tmp, name)) as zf:
            names = zf.namelist()
            dist_info = "footfall-%s.dist-info/" % footfall.__version__
            self.assertEqual(names[-1], dist_info + "RECORD")
            want = {"footfall/" + os.path.basename(p) for p in package_sources()} | {"footfall/py.typed"}
            self.assertEqual({n for n in names if n.startswith("footfall/")}, want)
            record = zf.read(dist_info + "RECORD").decode().splitlines()
            self.assertEqual(len(record), len(names))
            for line in record:
                path, digest, size = line.rsplit(",", 2)
                if path.endswith("/RECORD"):
                    self.assertEqual((digest, size), ("", ""))
                    continue
                data = zf.read(path)
                self.assertEqual(digest, "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode())
                self.assertEqual(int(size), len(data))
            metadata = zf.read(dist_info + "METADATA").decode()
            self.assertIn("Name: footfall\n", metadata)
            self.assertIn("Version: %s\n" % footfall.__version__, metadata)
            self.assertIn("Requires-Python: >=3.9\n", metadata)
            self.assertIn("Tag: py3-none-any", zf.read(dist_info + "WHEEL").decode())
        # Reproducible: the same bytes twice.
        first = read_bytes(os.path.join(self.tmp, name))
        os.remove(os.path.join(self.tmp, name))
        self.be.build_wheel(self.tmp)
        self.assertEqual(read_bytes(os.path.join(self.tmp, name)), first)

    def test_sdist(self):
        name = self.be.build_sdist(self.tmp)
        with tarfile.open(os.path.join(self.tmp, name)) as tf:
            names = set(tf.getnames())
        base = name[: -len(".tar.gz")]
        for want in ("PKG-INFO", "pyproject.toml", "_build/footfall_build.py", "footfall/__init__.py"):
            self.assertIn(base + "/" + want, names)


class SourceTest(unittest.TestCase):
    def test_python_39_syntax_and_stdlib_only(self):
        stdlib = getattr(sys, "stdlib_module_names", None)  # 3.10+
        for path in package_sources() + [os.path.join(support.CLIENT_DIR, "_build", "footfall_build.py")]:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path, feature_version=(3, 9))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    top = mod.split(".")[0]
                    if top == "django":
                        continue  # imported only when the process is a Django process
                    if stdlib is not None:
                        self.assertIn(top, stdlib, "%s imports %s" % (os.path.basename(path), mod))


class PipInstallTest(unittest.TestCase):
    def test_pip_install_offline(self):
        if subprocess.run([sys.executable, "-m", "pip", "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            self.skipTest("pip is not installed for %s" % sys.executable)
        tmp = tempfile.mkdtemp(prefix="footfall-pip-")
        self.addCleanup(shutil.rmtree, tmp, True)
        target = os.path.join(tmp, "site")
        # --no-index: pip may not look anything up, so this passes only if the build needs nothing but pip.
        res = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "--no-cache-dir",
             "--target", target, support.CLIENT_DIR],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        self.assertEqual(res.returncode, 0, res.stdout.decode(errors="replace"))
        res = subprocess.run(
            [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import footfall; "
             "from footfall import visitor_broadcaster, mint_token, FootfallError; print(footfall.__file__)", target],
            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(res.returncode, 0, res.stdout.decode(errors="replace"))
        self.assertTrue(res.stdout.decode().strip().startswith(target), res.stdout)
        self.assertFalse(os.path.exists(os.path.join(support.CLIENT_DIR, "build")), "pip left build/ in the source tree")


if __name__ == "__main__":
    unittest.main()
