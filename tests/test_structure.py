"""Package structure a reviewer reads for: no function in sgdsde/ longer than MAX_BODY_LINES (issue 22:
each function fits on a screen and reads whole; tables of closures become small classes)."""

import ast
import pathlib
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_BODY_LINES = 80
# "path::qualified name" → why it stays longer (none today: add one only with a reason a reviewer accepts)
ALLOWED: dict[str, str] = {}


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the last one (nested functions and
    comments between statements count; the signature, decorators and docstring do not)."""
    body = node.body
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        body = body[1:]
    if not body:
        return 0
    end = body[-1].end_lineno
    assert end is not None
    return end - body[0].lineno + 1


def functions(tree: ast.Module):
    """(qualified name, node) of every function and method, nested ones included (a def can only sit in a
    statement list, so expressions are not walked)."""
    stack: list[tuple[str, list[ast.stmt]]] = [("", tree.body)]
    while stack:
        prefix, statements = stack.pop()
        for st in statements:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{st.name}"
                if not isinstance(st, ast.ClassDef):
                    yield name, st
                stack.append((name + ".", st.body))
                continue
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for block in getattr(st, field, []):
                    # handlers and match cases hold their statements one level down
                    stack.append(
                        (
                            prefix,
                            block.body if isinstance(block, (ast.excepthandler, ast.match_case)) else [block],
                        )
                    )


def long_functions(source: str, path: str) -> list[tuple[str, int]]:
    """('path:line path::name', body lines) of the functions in ``source`` over MAX_BODY_LINES."""
    return [
        (f"{path}:{node.lineno} {path}::{name}", n)
        for name, node in functions(ast.parse(source))
        if (n := body_lines(node)) > MAX_BODY_LINES
    ]


def test_the_counter_skips_the_docstring_and_counts_nested_bodies():
    """The measure itself: a docstring is free, a body of 81 lines is one too many, nested functions are
    found by their qualified name."""
    doc = '    """' + "\n".join(["doc"] * 30) + '"""\n'
    ok = "def ok():\n" + doc + "    x = 0\n" * MAX_BODY_LINES
    long = "class C:\n    def m(self):\n        def inner():\n" + "            x = 0\n" * (MAX_BODY_LINES + 1)
    assert long_functions(ok, "a.py") == []
    found = long_functions(textwrap.dedent(long), "b.py")
    assert [(k.split()[-1], n) for k, n in found] == [
        ("b.py::C.m", MAX_BODY_LINES + 2),
        ("b.py::C.m.inner", 81),
    ]


def test_no_function_over_80_lines():
    """Every function and method in sgdsde/ has at most MAX_BODY_LINES body lines, or a reason in ALLOWED."""
    offenders, seen = [], set()
    for py in sorted((ROOT / "sgdsde").rglob("*.py")):
        rel = str(py.relative_to(ROOT))
        for where, n in long_functions(py.read_text(), rel):
            key = where.split()[-1]
            seen.add(key)
            if key not in ALLOWED:
                offenders.append(f"{where.split()[0]} {key.split('::')[1]}: {n} lines")
    assert not offenders, f"functions over {MAX_BODY_LINES} body lines:\n" + "\n".join(offenders)
    assert not set(ALLOWED) - seen, (
        f"ALLOWED names functions that are short now: {sorted(set(ALLOWED) - seen)}"
    )
