"""The LaTeX in the package's docstrings survives re-wrapping: every docstring has its math spans closed, each
span on one line (a formula broken across lines by a re-wrap is what this guards against), braces and
\\left/\\right balanced, no control characters (an unescaped backslash such as \\f or \\t in a non-raw docstring),
and only known LaTeX commands (a typo such as \\nalba fails). The noise models' LaTeX gets the same structural
checks in tests/test_noise_contract.py through ``helpers.check_latex``."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest
from helpers import check_latex

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sgdsde"

# Every command the docstrings use; all render in MathJax and KaTeX. A new one is added here deliberately.
KNOWN_COMMANDS = set(
    """Delta Gamma Phi Sigma Upsilon alpha approx arg bar beta big Big bigg cdot cdots cos dot dots ell eta exp
    frac gamma ge in int lambda langle le log mapsto mathbb mathcal mathrm max min mu nabla ne notin nu odot
    operatorname otimes partial pi pm rangle rm sigma sim sinh sqrt sum tau text tfrac theta tilde varepsilon
    varphi xi left right quad qquad top infty lim to leq geq neq hat circ mathbf""".split()
)


def _docstrings():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    yield f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'name', '<module>')}", doc


def test_the_package_has_docstrings_with_math():
    """The walk finds the package's docstrings and their formulas (so the checks below cannot pass vacuously)."""
    docs = dict(DOCS)
    assert len(docs) > 300
    assert sum(doc.count("$") // 2 for doc in docs.values()) > 300


DOCS = list(_docstrings())


@pytest.mark.parametrize("where, doc", DOCS, ids=[w for w, _ in DOCS])
def test_docstring_latex_is_well_formed(where, doc):
    """One docstring's formulas: closed, one line each, balanced, known commands, no control characters."""
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", doc), (
        f"{where}: a control character (unescaped \\?)"
    )
    assert doc.count("$") % 2 == 0, f"{where}: an unclosed $ … $"
    for span in re.findall(r"\$(.+?)\$", doc, re.S):
        assert "\n" not in span, f"{where}: a formula broken across lines: ${span}$"
        check_latex(span, where)
        unknown = set(re.findall(r"\\([A-Za-z]+)", span)) - KNOWN_COMMANDS
        assert not unknown, f"{where}: unknown LaTeX commands {sorted(unknown)} in ${span}$"


@pytest.mark.parametrize(
    "bad, match",
    [("\\frac{1}{2", "unbalanced"), ("\\left( x", "left"), ("a}{b", "unbalanced")],
)
def test_check_latex_catches_breakage(bad, match):
    """The structural checker refuses what a broken re-wrap leaves behind."""
    with pytest.raises(AssertionError, match=match):
        check_latex(bad, "example")
