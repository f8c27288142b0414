"""SQL lives in the store package: no other module, no test but the store's own, and no
benchmark runs SQL.

import-linter keeps the database drivers inside ``receiver.store`` (pyproject.toml); it cannot
see SQL text handed to the store's connection, which is what this scan finds: a call of
``execute``/``executemany``/``executescript`` given a string, and string literals that read as
SQL statements. Docstrings and comments may speak of SQL; they are not scanned.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each file allowed to run SQL outside the store, with the reason.
RECEIVER_ALLOWED = {
    # The leadership lease: a long-lived connection of its own that must keep renewing while
    # the store's pool is busy or exhausted, and the fence check every side effect runs in
    # the store's transaction (see its docstring).
    "receiver/leadership.py",
}
TESTS_ALLOWED = {
    # The throwaway PostgreSQL cluster: creating and dropping the tests' databases is the
    # cluster administrator's SQL, below any store.
    "tests/postgres.py",
    # The leadership lease's own tests: they create its table and drive its SQL (allowed
    # above) as a rival replica would.
    "tests/test_leadership.py",
    # Checks the throwaway cluster fixture itself, as a database client would.
    "tests/test_postgres_fixture.py",
    # This file: its examples of what the scan finds.
    "tests/test_layers.py",
}
_RUNS_SQL = {"execute", "executemany", "executescript"}
_STATEMENT = re.compile(
    r"\bSELECT\b.*\bFROM\b|\bSELECT\s+\d|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b|\bPRAGMA\s+\w|\b(CREATE|DROP)\s+(DATABASE|TABLE|INDEX)\b",
    re.DOTALL,
)


def _text(node: ast.expr) -> str | None:
    """The literal text of a string expression (f-strings: their literal parts), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is not None or right is not None:
            return (left or "") + (right or "")
    return None


def _names_sql(node: ast.expr) -> bool:
    """A string, or a constant's name (``FENCE_SQL``): what ``execute`` is given as SQL."""
    if isinstance(node, ast.Name):
        return node.id.isupper()
    return _text(node) is not None


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the string nodes that are docstrings."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ) and (node.body and isinstance(node.body[0], ast.Expr)):
            found.add(id(node.body[0].value))
    return found


def sql_in(source: str) -> list[str]:
    """Where ``source`` runs SQL: ``line: what`` for each place found."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _RUNS_SQL
            and node.args
            and (node.func.attr != "execute" or _names_sql(node.args[0]))
        ):
            found.append(f"{node.lineno}: {node.func.attr}() given SQL")
        elif isinstance(node, ast.Constant | ast.JoinedStr) and id(node) not in docstrings:
            text = _text(node)
            if text is not None and _STATEMENT.search(text):
                found.append(f"{node.lineno}: SQL text {text[:60]!r}")
    return found


def _python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_scan_finds_sql_and_ignores_prose() -> None:
    assert sql_in('conn.execute("SELECT state FROM inbox WHERE id = ?", (1,))')
    assert sql_in('c.execute(f"DELETE FROM {table} WHERE id = ?", ids)')
    assert sql_in('_Q = "UPDATE outbox SET state = ?"')
    assert sql_in("db.executescript(script)")
    assert sql_in('c.execute("PRAGMA user_version")')
    assert sql_in("conn.execute(LEASE_DDL)")
    assert sql_in('sql.SQL("CREATE DATABASE {} TEMPLATE template0")')
    assert not sql_in('"""One SELECT and one INSERT INTO per batch."""\n# UPDATE x SET y\n')
    assert not sql_in('kube.execute(plan)\nmethod = "DELETE"\ntext = "select a pod"')


def _receiver_files() -> list[Path]:
    return [p for p in _python_files("receiver") if not _relative(p).startswith("receiver/store/")]


@pytest.mark.parametrize("path", _receiver_files(), ids=_relative)
def test_no_module_outside_the_store_runs_sql(path: Path) -> None:
    name = _relative(path)
    found = sql_in(path.read_text())
    if name in RECEIVER_ALLOWED:
        assert found, f"{name} runs no SQL any more: take it off the allowlist"
    else:
        assert not found, f"{name} runs SQL; move it into receiver/store/: {found}"


def _is_store_test(name: str) -> bool:
    """The store's own tests and their helpers (``test_store*.py``, ``store_*.py``)."""
    return name.startswith(("tests/test_store", "tests/store_"))


@pytest.mark.parametrize(
    "path", [p for p in _python_files("tests") if not _is_store_test(_relative(p))], ids=_relative
)
def test_no_test_but_the_stores_own_runs_sql(path: Path) -> None:
    name = _relative(path)
    found = sql_in(path.read_text())
    if name in TESTS_ALLOWED:
        assert found, f"{name} runs no SQL any more: take it off its list"
    else:
        assert not found, f"{name} runs SQL; read through the store's functions: {found}"


@pytest.mark.parametrize("path", _python_files("bench"), ids=_relative)
def test_no_benchmark_runs_sql(path: Path) -> None:
    """Benchmarks seed and read the store through its functions, as the receiver does."""
    found = sql_in(path.read_text())
    assert not found, f"{_relative(path)} runs SQL; use the store's functions: {found}"


def test_the_store_itself_is_scanned_as_sql() -> None:
    """The scan would see the store's own SQL: a scan that finds nothing anywhere proves
    nothing."""
    assert sql_in((ROOT / "receiver/store/incidents.py").read_text())
