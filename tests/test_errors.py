"""The error family: every error the library raises on purpose is a FastfashionError, and the command line tells
those (one line, exit 1) from bugs (a traceback, a line asking for a report, exit 70).

The raise sites are read from the source with ``ast``, so a new ``raise ValueError(...)`` in library code fails
here until it is a typed error or is added to :data:`ALLOWED` with its reason.
"""
from __future__ import annotations

import ast
import builtins
import errno
import importlib
import pkgutil
from pathlib import Path

import pytest

import fastfashion
from fastfashion import FastfashionError, __version__, cli
from fastfashion.errors import (
    EXIT_SOFTWARE,
    ConfigError,
    TargetExistsError,
    Terminated,
    fix_param,
    fixable,
    out_of_memory,
    user_facing,
)

PKG = Path(fastfashion.__file__).resolve().parent
REPO = PKG.parent
BUILTIN_ERRORS = {name for name, obj in vars(builtins).items()
                  if isinstance(obj, type) and issubclass(obj, BaseException)}

# (file, function, built-in) -> why a bare built-in is right there. Only Python protocols and a Python caller's
# misuse of an API the command line never misuses: when the command line hits one, it is a bug, and a traceback
# is what it should print.
ALLOWED = {
    ("fastfashion/__init__.py", "__getattr__", "AttributeError"):
        "a module's __getattr__ must raise AttributeError (the import protocol: hasattr, from-imports)",
    ("fastfashion/loading/loader.py", "_backend_for_transform", "TypeError"):
        "a torchvision transform given to a DALI backend by name: a Python caller's mistake (no flag passes one)",
    ("fastfashion/loading/base.py", "LoaderConfig.__post_init__", "TypeError"):
        "augment of a type no backend takes: a Python caller's mistake (the command line passes a bool)",
    ("fastfashion/loading/backends/dali_graph.py", "fashion_pipeline", "ValueError"):
        "the train graph without its random parameters: the loader's own invariant",
    ("fastfashion/train/metrics.py", "confusion_matrices", "ValueError"):
        "predictions and targets of different shapes: the Python caller's bug",
}



def _raised_class(exc: ast.expr) -> ast.expr:
    """The class expression of ``raise exc``: ``X`` of ``X(...)``, ``X`` of ``fixable(X(...), param)``."""
    if isinstance(exc, ast.Call):
        if isinstance(exc.func, ast.Name) and exc.func.id == "fixable" and exc.args:
            return _raised_class(exc.args[0])
        return exc.func
    return exc


def _bare_raises() -> list[tuple[str, str, str, int]]:
    """(file, function qualname, built-in, line) of every ``raise`` of a built-in exception class in the package."""
    found = []

    def visit(node: ast.AST, rel: str, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, rel, scope + [child.name])
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                cls = _raised_class(child.exc)
                if isinstance(cls, ast.Name) and cls.id in BUILTIN_ERRORS:
                    found.append((rel, ".".join(scope), cls.id, child.lineno))
            visit(child, rel, scope)

    for path in sorted(PKG.rglob("*.py")):
        visit(ast.parse(path.read_text(encoding="utf-8")), path.relative_to(REPO).as_posix(), [])
    return found


def test_library_raises_no_bare_builtin_outside_the_allow_list():
    bad = [f"{f}:{line} ({fn or 'module level'}): raise {name}" for f, fn, name, line in _bare_raises()
           if (f, fn, name) not in ALLOWED]
    assert bad == [], "raise a FastfashionError subclass (see fastfashion/errors.py), or allow-list it with a reason"


def test_the_allow_list_has_no_stale_entry():
    assert set(ALLOWED) <= {(f, fn, name) for f, fn, name, _ in _bare_raises()}


def test_the_scan_sees_a_bare_raise(tmp_path, monkeypatch):
    """The scan itself can fail: a planted ``raise fixable(ValueError(...))`` in a method is found and named."""
    pkg = tmp_path / "fastfashion"
    pkg.mkdir()
    (pkg / "x.py").write_text("class A:\n    def f(self):\n        raise fixable(ValueError('no'), 'p')\n")
    monkeypatch.setattr(f"{__name__}.PKG", pkg)
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert _bare_raises() == [("fastfashion/x.py", "A.f", "ValueError", 3)]


def _all_modules() -> list:
    names = [m.name for m in pkgutil.walk_packages([str(PKG)], "fastfashion.")
             if not m.name.endswith("__main__")]  # importing __main__ runs the command line
    return [importlib.import_module(n) for n in names]


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_exception_class_of_the_library_is_a_fastfashion_error():
    _all_modules()
    from fastfashion.train.preemption import Preempted
    ours = {c for c in _subclasses(BaseException) if c.__module__.split(".")[0] == "fastfashion"}
    assert len(ours) > 30  # the walk found the family (every module imported)
    signals = {Terminated, Preempted}  # KeyboardInterrupt's kin: they must not be caught as errors
    assert sorted(c.__qualname__ for c in ours - signals if not issubclass(c, FastfashionError)) == []
    assert all(not issubclass(c, Exception) for c in signals)


def test_typed_errors_keep_their_builtin_base_and_exit_code():
    from fastfashion.format.manifest import ManifestError
    from fastfashion.loading.base import LoaderError
    from fastfashion.remote.store import RemoteError
    assert issubclass(ManifestError, ValueError) and issubclass(RemoteError, OSError)
    assert issubclass(LoaderError, RuntimeError) and issubclass(TargetExistsError, FileExistsError)
    assert FastfashionError.exit_code == 1 and ConfigError("x").exit_code == 1
    err = fixable(TargetExistsError("out exists"), "overwrite")
    assert fix_param(err) == "overwrite" and str(err) == "out exists" and err.errno is None


def test_a_config_check_raises_a_typed_error():
    from fastfashion.loading.augment import AugmentConfig
    with pytest.raises(ConfigError, match="flip is a probability, got 2"):
        AugmentConfig(flip=2)


def test_user_facing_tells_the_environment_from_a_bug():
    assert user_facing(ConfigError("x")) and user_facing(MemoryError())
    assert user_facing(OSError(errno.ENOSPC, "No space left on device", "/out/a.tar"))
    assert user_facing(PermissionError(errno.EACCES, "Permission denied"))
    assert not user_facing(OSError("short read"))  # no errno: the library's own words, untyped
    assert not user_facing(ValueError("x")) and not user_facing(AttributeError("x")) and not user_facing(KeyError(1))
    assert out_of_memory(type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory"))


def test_cli_states_a_library_error_in_one_line(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path)]) == 1  # a folder without manifest.json
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fastfashion inspect: error: {tmp_path}"), err
    assert "manifest.json" in err[0]


def _synthesize_raising(error: BaseException):
    def synthesize(*args, **kwargs):
        raise error
    return synthesize


def test_cli_reports_a_bug_with_its_traceback(tmp_path, monkeypatch, capsys):
    import fastfashion.data.synth as synth
    monkeypatch.setattr(synth, "synthesize", _synthesize_raising(AttributeError("'NoneType' has no attribute 'x'")))
    assert cli.main(["synth", str(tmp_path / "d"), "--train", "1", "--val", "0", "--test", "0"]) == EXIT_SOFTWARE == 70
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert "AttributeError: 'NoneType' has no attribute 'x'" in err
    assert err[-1] == (f"fastfashion synth: internal error (a bug in fastfashion {__version__}): please report it "
                       "with the traceback above")


def test_cli_verbose_raises_a_bug(tmp_path, monkeypatch):
    import fastfashion.data.synth as synth
    monkeypatch.setattr(synth, "synthesize", _synthesize_raising(KeyError("train")))
    with pytest.raises(KeyError):
        cli.main(["-v", "synth", str(tmp_path / "d"), "--train", "1", "--val", "0", "--test", "0"])


@pytest.mark.parametrize("error, line", [
    (PermissionError(errno.EACCES, "Permission denied", "/ro/d"), "[Errno 13] Permission denied: '/ro/d'"),
    (TargetExistsError("/d exists and is not a folder"), "/d exists and is not a folder"),
    (fixable(TargetExistsError("/d is a shard set"), "overwrite"), "/d is a shard set; pass --overwrite to replace it"),
])
def test_cli_states_the_environment_and_typed_errors_in_one_line(error, line, tmp_path, monkeypatch, capsys):
    import fastfashion.data.synth as synth
    monkeypatch.setattr(synth, "synthesize", _synthesize_raising(error))
    assert cli.main(["synth", str(tmp_path / "d"), "--train", "1", "--val", "0", "--test", "0"]) == 1
    assert capsys.readouterr().err.splitlines() == [f"fastfashion synth: error: {line}"]


def test_cli_exits_with_the_error_s_exit_code(tmp_path, monkeypatch, capsys):
    class Unavailable(FastfashionError):  # a future error with its own status
        exit_code = 69

    import fastfashion.data.synth as synth
    monkeypatch.setattr(synth, "synthesize", _synthesize_raising(Unavailable("the store is down")))
    assert cli.main(["synth", str(tmp_path / "d"), "--train", "1", "--val", "0", "--test", "0"]) == 69
    assert capsys.readouterr().err == "fastfashion synth: error: the store is down\n"
