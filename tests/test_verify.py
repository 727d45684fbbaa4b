"""Verification before publishing (``fer_mek.verify``, ``fer_mek.remote_code_check``): a folder that does not
reproduce the run's model, with or without the package, is refused before anything is written or uploaded."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fer_mek import publish as publish_module
from fer_mek import remote_code_check
from fer_mek.publish import main
from fer_mek.runs import load_run
from fer_mek.verify import verification_images

from .publish_fixtures import REPO_ID, make_run


@pytest.fixture(scope="module")
def rafdb_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("verify-run"))


def _tampered(monkeypatch, tamper) -> None:
    """Let :func:`fer_mek.publish.publish` assemble the folder, then ``tamper`` with it before the verification."""
    assemble = publish_module.assemble

    def assemble_then_tamper(run, folder, *args, **kwargs):
        files = assemble(run, folder, *args, **kwargs)
        tamper(Path(folder))
        return files

    monkeypatch.setattr(publish_module, "assemble", assemble_then_tamper)


def test_verification_refuses_other_weights(rafdb_run, tmp_path, monkeypatch, capsys):
    _tampered(monkeypatch, lambda folder: shutil.copyfile(rafdb_run / "last" / "model.safetensors",
                                                          folder / "model.safetensors"))
    out = tmp_path / "out"
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 1
    assert "logits differ from the run's model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_verification_refuses_an_incomplete_auto_map(rafdb_run, tmp_path, monkeypatch, capsys):
    def drop_auto_model(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        del config["auto_map"]["AutoModel"]
        (folder / "config.json").write_text(json.dumps(config))

    _tampered(monkeypatch, drop_auto_model)
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                      str(tmp_path / "out")]) == 1
    assert "auto_map lacks ['AutoModel']" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_verification_refuses_remote_code_that_differs_from_the_package(rafdb_run, tmp_path, monkeypatch, capsys):
    """The package loads the folder correctly, but its own code (used without the package) computes otherwise."""
    patch = textwrap.dedent("""

        _forward = MEKForImageClassification.forward


        def _shifted(self, *args, **kwargs):
            output = _forward(self, *args, **kwargs)
            output.logits = output.logits + 1.0
            return output


        MEKForImageClassification.forward = _shifted
        """)
    _tampered(monkeypatch, lambda folder: (folder / "modeling_mek.py").write_text(
        (folder / "modeling_mek.py").read_text() + patch))
    assert main(["--run", str(rafdb_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                      str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "remote code, AutoModelForImageClassification: logits differ" in err
    assert list(tmp_path.iterdir()) == []


def test_verification_images_fall_back_to_generated_faces(rafdb_run):
    run = load_run(rafdb_run)
    pictures, where = verification_images(run, count=4)
    assert len(pictures) == 4 and "validation split (rafdb" in where
    pictures, where = verification_images(run, count=3, source="synthetic")
    assert len(pictures) == 3 and where == "3 generated synthetic faces"
    # The split is rebuilt from the run's recorded options (results["config"], as DataOptions): move the data away.
    run.results = {**run.results, "dataset": {**run.results["dataset"], "root": "/nowhere/rafdb"},
                   "config": {**run.results["config"], "data_root": "/nowhere/rafdb"}}
    pictures, where = verification_images(run, count=2)
    assert len(pictures) == 2 and "not available here" in where


# ------------------------------------------------------------------------------------------ the remote-code check
def test_remote_code_check_imports_nothing_from_fer_mek():
    """It runs where fer_mek cannot be imported: no import of fer_mek, absolute or relative, anywhere in the file."""
    path = Path(remote_code_check.__file__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append("." * node.level + (node.module or ""))
    assert imported, "the check imports torch and transformers"
    offending = [name for name in imported if name.startswith(".") or name.split(".")[0] == "fer_mek"]
    assert offending == [], offending


def test_remote_code_check_blocks_fer_mek_in_an_isolated_process(tmp_path):
    """In an isolated process (``python -I``, as the verification runs the check), fer_mek cannot be imported once
    blocked, although it is installed here."""
    probe = textwrap.dedent(f"""
        import runpy, sys
        check = runpy.run_path({str(Path(remote_code_check.__file__).resolve())!r})
        check["block_package"]()
        for name in ("fer_mek", "fer_mek.runs"):
            try:
                __import__(name)
            except ImportError as error:
                assert "is blocked" in str(error), error
            else:
                raise SystemExit(name + " imported")
        print("blocked")
        """)
    script = tmp_path / "probe.py"
    script.write_text(probe)
    done = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "blocked"
    # fer_mek is importable in this environment: the block, not its absence, is what the check relies on.
    found = subprocess.run([sys.executable, "-I", "-c", "import fer_mek.runs"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-3000:]
