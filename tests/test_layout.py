"""The package layout: each layer imports only the layers below it, nothing imports the CLI, no import cycle.

Imports are read from the source with ``ast`` (module level and inside functions alike), so a lazy import that
breaks the layering fails here too.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "fastfashion"
REPO = PKG.parent

# layer (a top-level module or subpackage) -> the layers it may import. "" is the package root.
LEAVES = {"_version", "schema", "hardware", "errors", "progress", "options", "fsutil"}  # only errors of fastfashion
ALLOWED = {
    **{leaf: {"errors"} for leaf in LEAVES - {"errors"}},  # errors.FastfashionError is the base of every error
    "errors": set(),
    "signals": {"errors", "fsutil"},  # the SIGTERM watchdog removes this process's recorded temporaries
    "": {"_version", "schema", "errors"},  # the package root: version, schema, error base; lazily (by name) the loader
    "format": {"_version", "schema", "errors", "fsutil"},
    "remote": LEAVES | {"format"},
    "shardset": LEAVES | {"format", "remote"},
    "data": LEAVES | {"format", "remote", "shardset"},
    "loading": LEAVES | {"format", "remote", "shardset"},
    "train": LEAVES | {"signals", "format", "remote", "shardset", "loading"},
    "bench": LEAVES | {"format", "remote", "shardset", "data", "loading", "train"},
    "cli": LEAVES | {"signals", "", "format", "remote", "shardset", "data", "loading", "train", "bench"},
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    """``fastfashion.x.y`` -> file, for every module of the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = ["fastfashion", *path.relative_to(PKG).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastfashion modules ``name`` imports (absolute and relative, at any depth of the file)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules)
    found.discard(name)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_known_layer():
    assert {_layer(m) for m in _graph()} == set(ALLOWED)


def test_layers_import_only_the_layers_below():
    bad = [f"{m} imports {t}" for m, targets in _graph().items() for t in sorted(targets)
           if _layer(t) != _layer(m) and _layer(t) not in ALLOWED[_layer(m)]]
    assert bad == []


def test_nothing_imports_the_cli_but_main():
    assert sorted(m for m, targets in _graph().items() if "fastfashion.cli" in targets) == ["fastfashion.__main__"]


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # a package importing its own submodule is not a cycle unless the submodule imports the package back
    assert cycles == []


def test_the_checker_sees_a_violation(tmp_path):
    """The import reader resolves relative imports (so a forbidden one cannot hide behind dots)."""
    modules = {"fastfashion.format.x": tmp_path / "x.py", "fastfashion.train.trainer": tmp_path / "t.py"}
    (tmp_path / "x.py").write_text("def f():\n    from ..train import trainer\n")
    assert _imports("fastfashion.format.x", tmp_path / "x.py", modules) == {"fastfashion.train.trainer"}


def _docstring_refs() -> list[tuple[Path, str]]:
    refs = []
    for path in [*PKG.rglob("*.py"), *(REPO / "benchmarks").glob("*.py"), *(REPO / "tests").glob("*.py")]:
        for ref in re.findall(r"(?<![\w/.])((?:docs/)?[A-Za-z_][\w-]*\.md)\b", path.read_text(encoding="utf-8")):
            refs.append((path, ref))
    return refs


@pytest.mark.parametrize("path,ref", _docstring_refs(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_markdown_reference_resolves_inside_the_repository(path, ref):
    assert (REPO / ref).is_file() or (REPO / "docs" / ref).is_file(), f"{path}: {ref} is not in the repository"


def test_no_function_longer_than_60_lines_without_a_reason():
    """A longer function must say why in a comment on its first line."""
    long = []
    for path in PKG.rglob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                if "# long:" not in lines[node.lineno - 1]:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert long == []


ROLE = re.compile(r":(?:mod|func|class|data|meth|attr|exc):`~?([\w.]+)`")


def _resolve(module: str, target: str) -> bool:
    """Whether a Sphinx-style reference in ``module`` names something that exists (other packages are not checked)."""
    if target.startswith("."):
        package = module if (PKG / Path(*module.split(".")[1:]) / "__init__.py").exists() else module.rsplit(".", 1)[0]
        depth = len(target) - len(target.lstrip("."))
        target = ".".join(package.split(".")[:len(package.split(".")) - depth + 1]) + "." + target.lstrip(".")
    elif not target.startswith("fastfashion"):
        mod = importlib.import_module(module)
        if "." in target and not hasattr(mod, target.split(".")[0]):
            return True  # another package (torch, nvidia.dali ...): not ours to check
        if "." not in target and not hasattr(mod, target):  # a method or attribute named inside its class
            return any(hasattr(v, target) for v in vars(mod).values() if isinstance(v, type))
        target = f"{module}.{target}"
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def _role_refs() -> list[tuple[str, str]]:
    return [(name, ref) for name, path in _modules().items() if not name.endswith("__main__")
            for ref in ROLE.findall(path.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("module,ref", _role_refs())
def test_every_code_reference_in_a_docstring_resolves(module, ref):
    assert _resolve(module, ref), f"{module}: {ref} does not exist"


def test_the_reference_checker_sees_a_stale_name():
    assert not _resolve("fastfashion.data.synth_render", "fastfashion.synth")  # a module before the layout change
    assert not _resolve("fastfashion.loading.loader", "FashionLoader.no_such_method")
    assert _resolve("fastfashion.loading.loader", "fastfashion.format.reader.ShardFiles")
    assert not _resolve("fastfashion.loading.loader", "fastfashion.format.reader.NoSuchThing")
    assert _resolve("fastfashion.train.inference", ".trainer")
