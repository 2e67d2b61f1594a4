"""The light core and the layout: what each command imports, declared dependencies, the extras,
and imports that run down the data flow only."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from challenge.contract._compat import tomllib

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FRAMEWORKS = ("tensorflow", "keras", "torch", "jax")
# The parts of challenge/, in the order of the data flow: each may import only those before it.
PARTS = ("contract", "pipeline", "loaders", "scoring", "reports", "cli")
# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "skimage": "scikit-image", "tomli_w": "tomli-w",
                 "mpl_toolkits": "matplotlib"}  # mpl_toolkits ships inside matplotlib


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=TESTS,
        check=True,
        timeout=600,
    )


def test_generating_and_scoring_import_neither_tensorflow_nor_keras(tmp_path):
    code = """
import json, sys
from pathlib import Path
from typer.testing import CliRunner
from conftest import TINY
from challenge import (Evaluator, SubmissionMetadata, generate_release, load_release,
                       write_submission)
from challenge.cli import app

out = Path(sys.argv[1])
folder = generate_release(TINY, out / "tiny", chunk_size=16, workers=1)
test = load_release(folder, "test")
meta = SubmissionMetadata(name="x", release=TINY.name, method="truth x 1.1")
write_submission(out / "subs" / "x", meta, test.blend_id, 1.1 * test.flux)
Evaluator(folder, n_boot=10).eval(test.blend_id, 1.1 * test.flux)
runner = CliRunner()
codes = {}
for args in (["verify", str(folder)],
             ["score", str(out / "subs" / "x"), "--data", str(folder), "--n-boot", "10"],
             ["baseline", "sep", "--data", str(folder), "--out", str(out / "subs" / "sep"),
              "--workers", "1"],
             ["leaderboard", "--data", str(folder), "--submissions", str(out / "subs"),
              "--out", str(out / "lb"), "--n-boot", "10"]):
    res = runner.invoke(app, args)
    codes[args[0]] = [res.exit_code, res.output[-300:]]
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "torch"})
print(json.dumps({"codes": codes, "imported": heavy}))
"""
    doc = json.loads(run_python(code, str(tmp_path)).stdout.splitlines()[-1])
    assert all(c == 0 for c, _ in doc["codes"].values()), doc["codes"]
    assert doc["imported"] == []


def test_help_imports_only_the_cli_skin():
    code = """
import sys
from challenge.cli import app
try:
    app(["--help"])
except SystemExit:
    pass
heavy = ("sklearn", "galsim", "matplotlib", "pandas", "astropy", "scipy", "h5py", "sep",
         "tensorflow", "keras", "torch", "jax")
print(sorted({m.split(".")[0] for m in sys.modules} & set(heavy)))
"""
    assert run_python(code).stdout.strip().splitlines()[-1] == "[]"


def test_cnn_commands_without_keras_exit_2_naming_the_extra(tmp_path):
    code = """
import json, sys
sys.modules["keras"] = None  # as if the [cnn] extra were not installed
sys.modules["tensorflow"] = None
from typer.testing import CliRunner
from challenge.cli import app

out = {}
for args in (["train", "blend2flux", "--data", "v1", "--out", sys.argv[1]],
             ["baseline", "blend2flux", "--weights", "m.keras", "--data", "v1"],
             ["baseline", "blend2mask2flux", "--weights", "m.keras", "--data", "v1"]):
    res = CliRunner().invoke(app, args)
    out[" ".join(args[:2])] = [res.exit_code, res.output]
print(json.dumps(out))
"""
    doc = json.loads(run_python(code, str(tmp_path / "run")).stdout.splitlines()[-1])
    for command, (exit_code, output) in doc.items():
        assert exit_code == 2, (command, output)
        assert "needs 'keras'" in output and "[cnn] extra: pip install -e '.[cnn]'" in output
    assert not (tmp_path / "run").exists()


def _modules(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _imports(tree: ast.AST):
    """(module name, line) of every import, and of every import_extra/import_peer("module")."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", "") in ("import_extra", "import_peer")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            yield node.args[0].value, node.lineno


def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {re.match(r"[A-Za-z0-9_.-]+", r).group().lower() for r in reqs}

    extras = {k: names(v) for k, v in project["optional-dependencies"].items()}
    return {"core": names(project["dependencies"]), **extras}


def test_every_imported_package_is_declared():
    declared = _declared()
    assert "tensorflow-cpu" in declared["cnn"] and "keras" in declared["cnn"]
    all_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["all"]
    assert all_extra == ["blendbench[cnn,peers]"]
    kit = ("challenge", "baselines", "conftest", "test_scoring")
    missing = []
    for folder in ("challenge", "baselines"):
        for path, tree in _modules(ROOT / folder):
            rel = path.relative_to(ROOT).as_posix()
            allowed = set(declared["core"])
            if rel.startswith("baselines/cnn/"):
                allowed |= declared["cnn"]
            elif rel.startswith(("baselines/photutils", "baselines/scarlet")):
                allowed |= declared["peers"]
            for module, line in _imports(tree):
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in kit:
                    continue
                if rel == "challenge/loaders/frameworks.py" and top in FRAMEWORKS:
                    continue  # the adapters use the user's own framework, imported when called
                if rel == "challenge/contract/_compat.py" and top == "tomli":
                    continue  # declared for Python < 3.11 only
                if DISTRIBUTIONS.get(top, top).lower() not in allowed:
                    missing.append(f"{rel}:{line} imports {top}")
    assert missing == []


def test_tomllib_is_read_through_the_python_310_fallback():
    users = [
        path.relative_to(ROOT).as_posix()
        for folder in ("challenge", "baselines")
        for path, tree in _modules(ROOT / folder)
        if any(m == "tomllib" for m, _ in _imports(tree))
    ]
    assert users == ["challenge/contract/_compat.py"]
    assert (
        "tomli>=1.1; python_version < '3.11'"
        in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )


def test_imports_run_down_the_data_flow():
    backwards = []
    for path, tree in _modules(ROOT / "challenge"):
        parts = path.relative_to(ROOT / "challenge").parts
        if len(parts) == 1:
            continue  # challenge/__init__.py re-exports the public names lazily
        rank = PARTS.index(parts[0])
        for module, line in _imports(tree):
            names = module.split(".")
            if names[0] == "challenge" and len(names) > 1 and PARTS.index(names[1]) > rank:
                backwards.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    for path, tree in _modules(ROOT / "baselines"):
        backwards += [
            f"{path.relative_to(ROOT)}:{line} imports {module}"
            for module, line in _imports(tree)
            if module.startswith(("challenge.cli", "challenge.reports"))
        ]
    assert backwards == []
