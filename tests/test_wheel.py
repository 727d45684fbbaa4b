"""A wheel works without the checkout: built with ``pip wheel . --no-deps``, installed into a fresh virtual
environment, it trains, evaluates, predicts and publishes a dry run from a folder far from the repository.

The new environment gets fer-mek from the wheel only; its dependencies are borrowed from this test's environment
through a ``.pth`` line (installing torch again would take minutes and gigabytes). Slow: run with ``-m slow``.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, TINY_BACKBONE

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_wheel_trains_predicts_and_publishes_without_the_checkout(tmp_path):
    # Built from a copy of what the wheel is made of, so that the build leaves nothing in the checkout.
    source = tmp_path / "source"
    for package in ("fer_mek", "fer_mek_cli"):
        shutil.copytree(REPO_ROOT / package, source / package, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.cfg", "README.md", "MODEL_CARD.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels)], cwd=tmp_path, env=dict(os.environ))
    (wheel,) = wheels.glob("fer_mek-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=tmp_path, env=dict(os.environ)).strip())
    # The dependencies of this environment, appended after the new environment's own site-packages (a plain path
    # line: this environment's .pth files, among them the editable fer-mek install, are not processed).
    (purelib / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        cwd=tmp_path, env=dict(os.environ))

    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", FER_MEK_CACHE=str(tmp_path / "cache"))
    location = run([str(python), "-c", "import fer_mek; print(fer_mek.__file__)"], cwd=away, env=env).strip()
    assert Path(location).is_relative_to(env_dir), f"fer_mek came from {location}, not from the wheel"
    # The light command lines ship too, and find the packaged recipes without importing fer_mek.
    recipes = run([str(python), "-c", "from fer_mek_cli.train import RECIPE_DIR, list_recipes; "
                   "print(RECIPE_DIR); print(' '.join(list_recipes()))"], cwd=away, env=env).splitlines()
    assert Path(recipes[0]).is_relative_to(env_dir) and "synthetic" in recipes[1].split()

    # The default recipe comes from the package, shrunk to seconds; then evaluation, prediction and a dry-run publish.
    run([str(python), "-m", "fer_mek.train", "--backbone", TINY_BACKBONE, "--synthetic-images", "300",
         "--synthetic-image-size", "32", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
         "--log-with", "none", "--output-dir", "run"], cwd=away, env=env)
    assert (away / "run" / "results.json").is_file() and (away / "run" / "best" / "model.safetensors").is_file()
    out = run([str(python), "-c", "from fer_mek.evaluation import cli_main; raise SystemExit(cli_main(['--model', 'run/best']))"],
              cwd=away, env=env)
    assert "mean-class" in out.lower()
    from PIL import Image

    Image.new("RGB", (40, 40), (128, 100, 90)).save(away / "face.png")
    run([str(env_dir / "bin" / "fer-mek"), "predict", "face.png", "--no-detect", "--model", "run/best",
         "--output", "predictions.csv"], cwd=away, env=env)
    assert "face.png" in (away / "predictions.csv").read_text()
    run([str(python), "-c", "from fer_mek.publish import main; raise SystemExit(main(['--run', 'run', '--repo-id', "
         "'someone/fer-mek-wheel', '--dry-run', '--output-dir', 'preview']))"], cwd=away, env=env)
    card = (away / "preview" / "README.md").read_text()
    assert "<!-- fer-mek:" not in card and "fer-mek" in card  # the packaged template, filled
    assert (away / "preview" / "model.safetensors").is_file()
