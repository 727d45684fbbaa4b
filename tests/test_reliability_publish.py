"""Fault injection on the publishing and conversion path (issue 15: items 6 and 8, and the crash items of
``push.py`` / ``convert``): tampered model code in a run folder is never executed nor uploaded, the verification
subprocess cannot find a token, no local path reaches the upload, and unreadable checkpoints, read-only folders and a
full disk end in one clear line with nothing half-written.

Offline: uploads go to the loopback Hub of ``tests/hub_server.py`` (the ``upload_online`` fixture of conftest).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from fer_mek import convert
from fer_mek import publish as publish_module
from fer_mek.checkpoint_io import read_checkpoint
from fer_mek.local_paths import reduce_folder, reduce_local_paths, roots_of
from fer_mek.modeling_mek import remote_code_files
from fer_mek.publish import code_differences, main, publish
from fer_mek.verify import isolated_environment

from .conftest import FAKE_TOKEN
from .hub_server import FakeHub
from .publish_fixtures import REPO_ID, make_run


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("reliability-run"))


@pytest.fixture
def run_copy(pristine_run, tmp_path) -> Path:
    """A copy of the tiny finished run (its data root stays where it is), to tamper with."""
    run = tmp_path / "run"
    shutil.copytree(pristine_run, run)
    return run


def _package_code() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in remote_code_files()}


# ----------------------------------------------------------------------------------- item 6: tampered model code
def _plant_marker_code(model_dir: Path, marker: Path) -> None:
    """Append to every ``*.py`` of ``model_dir`` a line that creates ``marker`` when the file is imported, and add a
    module of its own."""
    line = f"\nimport pathlib as _pathlib\n_pathlib.Path({str(marker)!r}).write_text(__name__)\n"
    for path in model_dir.glob("*.py"):
        path.write_text(path.read_text(encoding="utf-8") + line, encoding="utf-8")
    (model_dir / "extra_module.py").write_text(line, encoding="utf-8")


def test_tampered_run_code_is_never_executed_nor_published(run_copy, tmp_path):
    marker = tmp_path / "MARKER-code-ran"
    _plant_marker_code(run_copy / "best", marker)
    out, lines = tmp_path / "out", []
    result = publish(run_copy, REPO_ID, dry_run=True, output_dir=out, echo=lines.append)
    assert not marker.exists(), f"the run folder's code ran: {marker.read_text()}"
    package = _package_code()
    assert {p.name: p.read_bytes() for p in out.glob("*.py")} == package
    assert not (out / "extra_module.py").exists()
    # Each difference is reported, one line per file.
    for name in package:
        assert f"{run_copy / 'best' / name}: differs from the installed fer_mek's; the upload uses the package's" \
               in result.code_notes
    assert any("extra_module.py: not part of the installed fer_mek's model code" in n for n in result.code_notes)
    assert all(f"note: {n}" in lines for n in result.code_notes)
    assert code_differences(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere' / n}: missing; the upload uses the "
                                                      "package's" for n in sorted(package)]


def test_untampered_run_has_no_code_notes(pristine_run):
    assert code_differences(pristine_run / "best") == []


def test_tampered_run_code_is_never_executed_nor_uploaded_to_the_hub(run_copy, tmp_path, upload_online):
    marker = tmp_path / "MARKER-code-ran"
    _plant_marker_code(run_copy / "best", marker)
    with FakeHub() as hub:
        assert main(["--run", str(run_copy), "--repo-id", REPO_ID, "--endpoint", hub.url]) == 0
    assert not marker.exists(), f"the run folder's code ran: {marker.read_text()}"
    (commit,) = hub.commits
    assert {name: data for name, data in commit.files.items() if name.endswith(".py")} == _package_code()


def _probe_the_remote_code_process(monkeypatch, probe: Path) -> None:
    """Let publish assemble its folder, then add to the folder's modeling_mek.py (which only the remote-code
    subprocess imports) a probe that records what that process can see: token, environment, working directory."""
    assemble = publish_module.assemble
    code = textwrap.dedent(f"""

        import json as _json, os as _os
        from huggingface_hub import get_token as _get_token
        _home = _os.environ.get("HF_HOME", "")
        _pathlib_probe = {str(probe)!r}
        with open(_pathlib_probe, "w") as _file:
            _json.dump({{"token": _get_token(), "env": dict(_os.environ), "cwd": _os.getcwd(),
                        "hf_home_files": sorted(_os.listdir(_home)) if _os.path.isdir(_home) else None}}, _file)
        """)

    def assemble_then_probe(run, folder, *args, **kwargs):
        files = assemble(run, folder, *args, **kwargs)
        (Path(folder) / "modeling_mek.py").write_text((Path(folder) / "modeling_mek.py").read_text() + code)
        return files

    monkeypatch.setattr(publish_module, "assemble", assemble_then_probe)


def test_the_verification_subprocess_finds_no_token(pristine_run, tmp_path, monkeypatch, upload_online):
    planted = "hf_PLANTEDtokenInHfHome000000000000000"
    hf_home = Path(os.environ["HF_HOME"])  # the upload fixture's; a stored login lives in HF_HOME/token
    hf_home.mkdir(parents=True, exist_ok=True)
    (hf_home / "token").write_text(planted)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", planted)
    monkeypatch.setenv("HF_TOKEN_PATH", str(hf_home / "token"))
    probe = tmp_path / "probe.json"
    _probe_the_remote_code_process(monkeypatch, probe)
    assert main(["--run", str(pristine_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                 str(tmp_path / "out")]) == 0
    seen = json.loads(probe.read_text())
    assert seen["token"] is None
    assert not [key for key, value in seen["env"].items() if planted in value or FAKE_TOKEN in value]
    assert seen["env"]["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in seen["env"]
    assert seen["env"]["HF_HOME"] != str(hf_home) and seen["hf_home_files"] == []
    assert seen["env"]["HOME"] != os.environ.get("HOME")
    assert Path(seen["cwd"]).resolve() != Path.cwd().resolve() and "fer-mek-verify-" in seen["cwd"]
    assert not Path(seen["cwd"]).exists(), "the verification's own folders are removed"


def test_isolated_environment_hides_every_token_source(tmp_path):
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    (hf_home / "token").write_text("hf_PLANTED")
    (tmp_path / "home" / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / "home" / ".cache" / "huggingface" / "token").write_text("hf_PLANTED")
    base = {**os.environ, "HF_HOME": str(hf_home), "HF_TOKEN": "hf_PLANTED", "HUGGING_FACE_HUB_TOKEN": "hf_PLANTED",
            "HF_TOKEN_PATH": str(hf_home / "token"), "HOME": str(tmp_path / "home"), "AWS_SECRET_ACCESS_KEY": "x",
            "GITHUB_TOKEN": "x", "HF_ENDPOINT": "https://example.invalid"}
    env = isolated_environment(tmp_path / "scratch", base)
    assert not [key for key, value in env.items() if "hf_PLANTED" in value]
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
                "HF_ENDPOINT"):
        assert key not in env, key
    assert env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == os.environ["PATH"]
    for key in ("HF_HOME", "HOME", "XDG_CACHE_HOME"):
        assert Path(env[key]).is_dir() and not list(Path(env[key]).iterdir()), key
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-I", "-c", "from huggingface_hub import get_token; import os; "
                           "print(get_token(), os.getcwd())"],
                          env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", str(work)]


# ------------------------------------------------------------------------------------------ item 8: local paths
def test_no_local_path_reaches_the_upload(run_copy, tmp_path, upload_online):
    secret = f"/tmp/{uuid.uuid4().hex}/secret-dir-XYZ"
    home_secret = str(Path.home() / "secret-home-XYZ")
    results = json.loads((run_copy / "results.json").read_text())
    data_root = results["dataset"]["root"]
    results["dataset"]["num_skipped"] = 3
    results["dataset"]["skipped"] = [
        {"file": f"{secret}/labels.txt", "line": 4, "reason": f"cannot decode {secret}/img 7.jpg: truncated file"},
        {"file": f"{data_root}/Image/aligned/train_00012_aligned.jpg", "line": None,
         "reason": f"cannot open {data_root}/Image/aligned/train_00012_aligned.jpg (see {home_secret}/log.txt)"},
        {"file": "relative/img.jpg", "line": 2, "reason": f"file://{secret}/x.png, C:\\Users\\alice\\secret-win\\y.png"},
    ]
    results["init"]["weights"] = f"{secret}/resnet18.pth"
    results["environment"]["note"] = f"run from {run_copy} by {home_secret}"
    (run_copy / "results.json").write_text(json.dumps(results, indent=2))
    out = tmp_path / "dry"
    assert main(["--run", str(run_copy), "--repo-id", REPO_ID, "--dry-run", "--output-dir", str(out)]) == 0
    with FakeHub() as hub:
        assert main(["--run", str(run_copy), "--repo-id", REPO_ID, "--endpoint", hub.url]) == 0
    (commit,) = hub.commits
    forbidden = [secret, secret.split("/")[2], home_secret, str(tmp_path), "secret-win", str(Path(data_root).parent)]
    texts = {f"dry/{p.name}": p.read_bytes() for p in out.iterdir()}
    texts.update({f"hub/{name}": data for name, data in commit.files.items()})
    texts["hub/commit"] = (commit.summary + commit.description).encode()
    leaks = [(where, word) for where, data in texts.items() for word in forbidden if word.encode() in data]
    # The home directory's short name ("/root") could occur by chance in the weights' bytes: text files only.
    home = f"{Path.home()}/"
    leaks += [(where, home) for where, data in texts.items()
              if where.endswith((".md", ".json", "commit")) and len(home) > 2 and home.encode() in data]
    assert not leaks, leaks
    published = json.loads((out / "results.json").read_text())
    skipped = published["dataset"]["skipped"]
    assert skipped[0] == {"file": "labels.txt", "line": 4, "reason": "cannot decode img 7.jpg: truncated file"}
    name = Path(data_root).name
    assert skipped[1]["file"] == f"{name}/Image/aligned/train_00012_aligned.jpg"
    assert skipped[1]["reason"] == f"cannot open {name}/Image/aligned/train_00012_aligned.jpg (see log.txt)"
    assert skipped[2] == {"file": "relative/img.jpg", "line": 2, "reason": "x.png, y.png"}
    assert published["init"]["weights"] == "resnet18.pth"
    assert published["environment"]["note"] == "run from run by secret-home-XYZ"
    assert "3 unreadable images were skipped" in (out / "README.md").read_text()


@pytest.mark.parametrize(("text", "expected"), [
    ("/data/rafdb", "rafdb"),
    ("/data/rafdb/Image/1.jpg: broken", "rafdb/Image/1.jpg: broken"),
    ("/data/raf db/EmoLabel/list.txt line 3", "raf db/EmoLabel/list.txt line 3"),
    ("/data/rafdb2/x.jpg", "x.jpg"),
    ("see /tmp/a/b/c.txt and /runs/exp1/best", "see c.txt and exp1/best"),
    ("https://huggingface.co/alice/x, 3/7, a/b, ../c/d, mean/std", "https://huggingface.co/alice/x, 3/7, a/b, ../c/d, "
                                                                   "mean/std"),
    ("file:///tmp/q/w.png", "w.png"),
    ("~/proj/x.pth", "x.pth"),
    ("C:\\Users\\alice\\x.jpg", "x.jpg"),
    ("\\\\server\\share\\f.txt", "f.txt"),
    ("(/tmp/k/l.jpg)", "(l.jpg)"),
    ("a / b", "a / b"),
])
def test_reduce_local_paths(text, expected):
    roots = roots_of([("/data/rafdb", None), ("/data/raf db", None), ("/runs/exp1", None)])
    assert reduce_local_paths(text, roots) == expected


def test_reduce_local_paths_of_the_home_directory_and_structures(tmp_path):
    home = str(Path.home())
    assert reduce_local_paths({home: [home, f"{home}/a/b.txt", 3, None]}) == {"~": ["~", "b.txt", 3, None]}
    # A root that is the home directory or a parent of it would keep every folder below it: never a root.
    assert roots_of([(home, None), ("/", None), (str(Path(home).parent), None), ("relative/x", None)]) == []
    (tmp_path / "config.json").write_text('{\n  "b": 1\n}\n')
    (tmp_path / "results.json").write_text(json.dumps({"root": "/x/y/rafdb"}))
    (tmp_path / "README.md").write_text("data at /x/y/rafdb/train\n")
    (tmp_path / "code.py").write_text("PATH = '/x/y/rafdb'\n")
    assert reduce_folder(tmp_path, roots_of([("/x/y/rafdb", None)])) == ["README.md", "results.json"]
    assert (tmp_path / "config.json").read_text() == '{\n  "b": 1\n}\n'
    assert json.loads((tmp_path / "results.json").read_text()) == {"root": "rafdb"}
    assert (tmp_path / "README.md").read_text() == "data at rafdb/train\n"
    assert (tmp_path / "code.py").read_text() == "PATH = '/x/y/rafdb'\n"


# ------------------------------------------------------------------------------------------------ crash items
def _backbone_file(tmp_path: Path, name: str, safetensors: bool = False) -> Path:
    import timm

    state = timm.create_model("test_resnet", num_classes=0).state_dict()
    path = tmp_path / name
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def test_a_pickle_renamed_safetensors_is_named(tmp_path, capsys):
    path = _backbone_file(tmp_path, "weights.safetensors")
    with pytest.raises(ValueError, match=r"weights.safetensors is not a safetensors file \(it looks like a torch "
                                         r"pickle\); rename it to .pth / .bin"):
        read_checkpoint(path)
    assert convert.cli_main(["--checkpoint", str(path), "--backbone", "test_resnet", "--output",
                             str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} is not a safetensors file") and err.count("\n") == 1
    renamed = _backbone_file(tmp_path, "weights.pth", safetensors=True)
    with pytest.raises(ValueError, match="weights.pth is a safetensors file, not a torch pickle; rename it to "
                                         ".safetensors"):
        read_checkpoint(renamed)
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ValueError, match="cut.safetensors is not a readable safetensors file"):
        read_checkpoint(tmp_path / "cut.safetensors")


def _read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` behave as a read-only folder (EROFS on any creation inside it): the tests run as root, where
    chmod does not stop writes."""
    import builtins
    import io

    folder = str(folder.resolve())

    def inside(path) -> bool:
        if not isinstance(path, str | os.PathLike):
            return False
        path = os.path.abspath(os.fspath(path))
        return path == folder or path.startswith(folder + os.sep)

    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))

    real_mkdir, real_open, real_builtin_open = os.mkdir, os.open, builtins.open

    def mkdir(path, *args, **kwargs):
        if inside(path) and not os.path.exists(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        return refuse(path) if inside(path) and writes else real_open(path, flags, *args, **kwargs)

    def builtin_open(file, mode="r", *args, **kwargs):
        writes = any(flag in mode for flag in "wax+")
        return refuse(file) if inside(file) and writes else real_builtin_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", builtin_open)
    monkeypatch.setattr(io, "open", builtin_open)


def test_convert_into_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    path = _backbone_file(tmp_path, "backbone.pth")
    locked = tmp_path / "locked"
    locked.mkdir()
    _read_only(monkeypatch, locked)
    assert convert.cli_main(["--checkpoint", str(path), "--backbone", "test_resnet", "--output",
                             str(locked / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not write the folder of --output {locked}") and err.count("\n") == 1, err
    assert "not writable" in err and list(locked.iterdir()) == []


def test_push_into_a_read_only_output_dir_is_one_line(pristine_run, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    _read_only(monkeypatch, locked)
    assert main(["--run", str(pristine_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                 str(locked / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not write the folder of --output-dir {locked}") and err.count("\n") == 1, err
    assert list(locked.iterdir()) == []


def test_push_with_a_read_only_tmpdir_is_one_line(pristine_run, tmp_path, capsys, monkeypatch, upload_online):
    import tempfile

    locked = tmp_path / "locked-tmp"
    locked.mkdir()
    _read_only(monkeypatch, locked)
    monkeypatch.setattr(tempfile, "tempdir", str(locked))
    with FakeHub() as hub:
        assert main(["--run", str(pristine_run), "--repo-id", REPO_ID, "--endpoint", hub.url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not write a temporary folder in TMPDIR {locked}") and err.count("\n") == 1, err
    assert not hub.commits and list(locked.iterdir()) == []


def _fill_the_disk(monkeypatch) -> None:
    """``transformers``' safetensors writer (what ``save_pretrained`` calls) writes half of the file, then the
    disk is full."""
    import transformers.modeling_utils

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)


def test_convert_on_a_full_disk_leaves_nothing(tmp_path, capsys, monkeypatch):
    path = _backbone_file(tmp_path, "backbone.pth")
    out_parent = tmp_path / "converted"
    out_parent.mkdir()
    _fill_the_disk(monkeypatch)
    assert convert.cli_main(["--checkpoint", str(path), "--backbone", "test_resnet", "--output",
                             str(out_parent / "out")]) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # after transformers' "Writing model shards" progress bar
    assert err.startswith(f"error: could not write the converted model folder {out_parent / 'out'}"), err
    assert "disk is full" in err and "nothing was written" in err
    assert list(out_parent.iterdir()) == [], "half-written folder left behind"


def test_push_on_a_full_disk_leaves_nothing(pristine_run, tmp_path, capsys, monkeypatch):
    real_copyfile = shutil.copyfile

    def copyfile(source, target, *args, **kwargs):
        if Path(target).name == "model.safetensors":
            Path(target).write_bytes(Path(source).read_bytes()[:100])
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real_copyfile(source, target, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    parent = tmp_path / "preview"
    parent.mkdir()
    assert main(["--run", str(pristine_run), "--repo-id", REPO_ID, "--dry-run", "--output-dir",
                 str(parent / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not write the folder to publish {parent / 'out'}"), err
    assert "disk is full" in err and "nothing was written or uploaded" in err and err.count("\n") == 1
    assert list(parent.iterdir()) == [], "half-written folder left behind"
