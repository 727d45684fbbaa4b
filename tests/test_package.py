"""Package hygiene: the library imports without the training stack, the demo runs, the public API is there."""

from __future__ import annotations

import ast
import subprocess
import sys

from .conftest import REPO_ROOT


def test_import_does_not_pull_the_training_stack():
    code = (
        "import sys, fer_mek; "
        "heavy = [m for m in ('datasets', 'evaluate', 'cv2', 'matplotlib') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "", f"importing fer_mek imported {result.stdout.strip()}"


#: The training stack: the only parts of the library that may import accelerate (the trainer and the benchmark that
#: drives it).
TRAINING_STACK = ("fer_mek/train/", "fer_mek/benchmark/")


def test_library_never_imports_accelerate():
    """transformers loads accelerate by itself when it is installed; the library must not need it outside training."""
    for path in (REPO_ROOT / "fer_mek").rglob("*.py"):
        if path.relative_to(REPO_ROOT).as_posix().startswith(TRAINING_STACK):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(name.split(".")[0] == "accelerate" for name in names), f"{path} imports accelerate"


def test_public_api_names():
    import fer_mek
    from fer_mek import losses

    for name in ("MEKConfig", "MEKModel", "MEKForImageClassification", "MEKPreTrainedModel", "MEKImageProcessor",
                 "MEKLoss", "losses"):
        assert hasattr(fer_mek, name), name
    for name in ("balance_weights", "rebalanced_smooth_targets", "rebalanced_smooth_label_loss",
                 "attention_consistency_loss", "MEKLoss"):
        assert hasattr(losses, name), name
    assert fer_mek.MEKConfig.model_type == "fer-mek"


def test_demo_classifies_fresh_faces_through_the_pipeline(saved_tiny_model, capsys):
    from fer_mek import demo

    folder, _ = saved_tiny_model
    assert demo.main(["--model", str(folder), "--per-class", "1", "--face-size", "48"]) == 0
    out = capsys.readouterr().out
    assert "fresh synthetic faces (1 per class): mean-class accuracy" in out and "MEKForImageClassification" in out
    assert "recall per class: surprise" in out
    assert demo.main(["--model", "no-such-folder"]) == 2
