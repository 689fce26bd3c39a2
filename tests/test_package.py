import subprocess
import sys

import upper_fast


def test_version_matches_pyproject():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert upper_fast.__version__ == re.search(r'\nversion = "([^"]+)"', text).group(1)


def test_simd_level_is_known():
    assert upper_fast.simd_level() in {"avx512", "avx2", "scalar"}


def test_import_does_not_import_torch():
    code = "import sys, upper_fast; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_all_names_resolve():
    for name in upper_fast.__all__:
        assert hasattr(upper_fast, name), name
