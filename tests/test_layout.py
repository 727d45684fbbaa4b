"""The layout rules of the code base, checked: no import cycles in the library, thin scripts, no ``sys.path`` edits,
no script loaded by path, no oversized module without a stated reason, and docs that name only files that exist.

These read the source as text (``ast``); nothing is imported or run.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "fer_mek"
#: The command lines' package: parsers that answer ``--help`` before the library (and torch) is imported.
CLI_PACKAGE = REPO_ROOT / "fer_mek_cli"
#: The longest a library module may be without saying in its docstring why ("Reason for its length: ...").
MAX_MODULE_LINES = 700
#: The most statements a script in scripts/ may hold besides its docstring and imports.
MAX_SCRIPT_STATEMENTS = 3


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(path): path for package in (PACKAGE, CLI_PACKAGE) for path in sorted(package.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every fer_mek module that ``path`` imports, at the top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one, else a name of pkg.
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def import_cycles() -> list[list[str]]:
    modules = library_modules()
    known = set(modules)
    graph = {name: imported_modules(name, path, known) for name, path in modules.items()}
    # A command line's `main` imports the library inside the function, to run the command after parsing: that edge
    # runs when both modules are loaded and cannot form an import-time cycle (module-level imports of fer_mek from
    # fer_mek_cli are refused by test_the_command_lines_import_only_the_standard_library_at_module_level).
    for name, targets in graph.items():
        if name.startswith("fer_mek_cli"):
            targets.difference_update({target for target in targets if not target.startswith("fer_mek_cli")})
    # Tarjan's strongly connected components: a component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_no_library_module_imports_one_that_imports_it_back():
    assert import_cycles() == [], "fer_mek modules that import each other (top-level or inside functions)"


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    fake = tmp_path / "a.py"
    fake.write_text("def f():\n    from .b import g\n    import fer_mek.c\n")
    assert imported_modules("fer_mek.a", fake, {"fer_mek.a", "fer_mek.b", "fer_mek.c"}) == {"fer_mek.b", "fer_mek.c"}


def python_files() -> list[Path]:
    return [path for folder in ("fer_mek", "fer_mek_cli", "scripts", "tests", "hub") for path in (REPO_ROOT / folder).rglob("*.py")]


def test_nothing_edits_sys_path():
    pattern = re.compile(r"sys\.path(\s*(\[.*\])?\s*=|\.(insert|append|extend|remove)\()")
    offenders = [f"{path.relative_to(REPO_ROOT)}:{number}" for path in python_files()
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if pattern.search(line) and path != Path(__file__)]
    assert offenders == []


def test_no_script_is_loaded_by_path():
    """Scripts are entry points, never modules of something else: tests and scripts import fer_mek instead.
    Two files are run by path on purpose: the Gradio Space's app (the Space's entry file, not a script) and the
    remote-code check, which verification runs by path in a process where fer_mek cannot be imported."""
    pattern = re.compile(r"spec_from_file_location|run_path\(|load_script\(|SourceFileLoader")
    offenders = []
    for path in python_files():
        if path == Path(__file__):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            allowed = (path.name == "test_space.py" and "APP" in line) or "remote_code_check" in line
            if pattern.search(line) and not allowed:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("script", sorted((REPO_ROOT / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_scripts_are_thin_entry_points(script):
    """A docstring, an import of its command line from fer_mek_cli, and a call of its ``main``: the parser lives in
    fer_mek_cli (light, so ``--help`` is fast), the logic in the library."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    body = list(tree.body)
    assert ast.get_docstring(tree), f"{script.name}: say in a docstring what it runs and how"
    body = [node for node in body[1:] if not isinstance(node, (ast.Import, ast.ImportFrom))]
    assert len(body) <= MAX_SCRIPT_STATEMENTS, f"{script.name}: logic belongs in fer_mek"
    imported = {alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
                for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert "fer_mek_cli" in imported, f"{script.name} must call its fer_mek_cli command line"
    assert imported <= {"fer_mek_cli", "__future__", "sys"}, f"{script.name} imports {imported}"
    assert not any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in ast.walk(tree))


def test_the_command_lines_import_only_the_standard_library_at_module_level():
    """fer_mek_cli's modules are imported before any command runs: at module level they may import the standard
    library, PyYAML and each other; fer_mek (which loads torch) only inside functions, to run a command."""
    allowed = set(sys.stdlib_module_names) | {"yaml", "fer_mek_cli"}
    offenders = []
    for path in sorted(CLI_PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["fer_mek_cli" if node.level else node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] not in allowed]
    assert offenders == []


def test_library_modules_are_of_a_livable_length():
    too_long = []
    for name, path in library_modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if lines > MAX_MODULE_LINES and "reason for its length" not in docstring.lower():
            too_long.append(f"{name}: {lines} lines")
    assert too_long == []


def test_no_module_shadows_a_dependency():
    """A script named like a package (scripts/evaluate.py and `evaluate`) breaks imports of that package."""
    shadowing = {"evaluate", "datasets", "transformers", "timm", "accelerate", "torch", "safetensors", "gradio"}
    assert not [p.name for p in (REPO_ROOT / "scripts").glob("*.py") if p.stem in shadowing]


DOCS = ("README.md", "BENCHMARKS.md", "Makefile", "hub/README.md", "hub/space/README.md", "MODEL_CARD.md")


@pytest.mark.parametrize("doc", DOCS)
def test_every_file_the_docs_name_exists(doc):
    text = (REPO_ROOT / doc).read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w./-])((?:scripts|fer_mek|fer_mek_cli|tests|hub)/[\w./-]*\w)", text))
    missing = sorted(path for path in named if not (REPO_ROOT / path).exists())
    assert missing == [], f"{doc} names files that do not exist"


def test_every_script_is_in_the_readme_layout():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [p.name for p in (REPO_ROOT / "scripts").glob("*.py") if p.name not in layout]
    assert missing == []
    for row in re.findall(r"^\| `([^`]+)` \|", layout, flags=re.MULTILINE):
        assert (REPO_ROOT / row.rstrip("/")).exists(), f"README layout names {row}, which does not exist"
