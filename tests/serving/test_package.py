import subprocess
import sys

import upper_fast


def test_version_matches_pyproject():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
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


def _imported_modules(path):
    """Every module name a Python file imports, at any depth (lazy imports inside functions too)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_serving_package_never_imports_training_code():
    """The import graph is one-directional: upper_fast_train may import upper_fast, never the reverse,
    and the serving package imports no torch (not even lazily)."""
    from pathlib import Path

    root = Path(upper_fast.__file__).resolve().parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 10
    offenders = {}
    for path in files:
        bad = sorted(n for n in _imported_modules(path)
                     if n.split(".")[0] in {"upper_fast_train", "torch", "transformers", "gensim", "bm25s"})
        if bad:
            offenders[str(path.relative_to(root))] = bad
    assert offenders == {}


def test_training_commands_without_the_training_package(monkeypatch, capsys):
    """Without upper-fast-train installed, its commands are still listed and say how to get them."""
    from upper_fast import cli

    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    parser = cli.build_parser()
    for name in cli.TRAINING_COMMANDS:
        assert name in parser._subparsers._group_actions[0].choices
    assert cli.main(["train", "data", "run", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "part of the training package" in err and "pip install upper-fast-train" in err


def test_training_package_version_matches():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "training" / "pyproject.toml").read_text()
    assert re.search(r'\nversion = "([^"]+)"', text).group(1) == upper_fast.__version__
    assert f'"upper_fast=={upper_fast.__version__}"' in text
