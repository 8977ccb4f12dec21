"""User strings are parsed from a whitelist and never evaluated; no eval, exec or pickle in the package."""

import pathlib
import re
import uuid

import pytest
import sympy as sp

import sgdsde.symbolic as sy
from sgdsde.symbolic._functions import sigmoid, softplus
from sgdsde.symbolic._parse import parse_expression

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("a", "b", "x_0", "x_1")


def symbols():
    return {n: sp.Symbol(n, real=True) for n in NAMES}


def test_payloads_are_refused_and_nothing_runs(tmp_path):
    """sympify would eval these; the parser refuses each with a ValueError naming the token, and the marker
    file the payload would create does not appear. [theory: SYM-6]"""
    marker = tmp_path / f"PWNED_{uuid.uuid4().hex}"
    payloads = [
        f"__import__('os').system('touch {marker}') + a*x_0",
        f"a*x_0 + __import__('os').system('touch {marker}')",
        "a.__class__",
        "a[0]",
        "(lambda: a)()",
        "eval('a')",
        "exec('a=1')",
        "open('/etc/passwd')",
        "__builtins__",
        "'a'",
        "a; b",
        "a if b else x_0",
        "[a, b]",
        "{a: b}",
        "a @ b",
        "getattr(a, 'b')",
    ]
    for text in payloads:
        with pytest.raises(ValueError, match=r"expr: .*(token|name|function|operator)"):
            sy.SymbolicModel(text, params=["a", "b"], inputs=["x_0"])
    assert not marker.exists()


CORPUS = [
    "a*tanh(b*x_0) + b**2*x_0",
    "c*a*tanh(w_1*x_1 + w_0*x_0)",
    "-a**2",
    "a**-b",
    "2*a**2/3",
    "a - b - x_0",
    "a/b/x_0",
    "a**b**x_0",
    "-(a + b)*x_0",
    "exp(log(sqrt(a**2 + 1)))",
    "sin(a)*cos(b) + tan(x_0) - sinh(a)/cosh(b)",
    "1.5e-3*a + .25*b + 3.*x_0 + 2E2",
    "Abs(a) + sign(b)*floor(x_0)",
    "sigmoid(a*x_0) + softplus(b*x_1)",
    "pi*a + E*b",
    "Heaviside(a)*x_0",
]


@pytest.mark.parametrize("text", CORPUS)
def test_parser_gives_sympys_expression(text):
    """On legitimate expressions (those of the tests and README, precedence and number formats) the parser
    builds exactly the expression sympy's own parser gives (sympy's parser is used here only on our own
    fixed strings). [theory: SYM-6]"""
    syms = {n: sp.Symbol(n, real=True) for n in (*NAMES, "c", "w_0", "w_1")}
    want = sp.parse_expr(text, local_dict={**syms, "sigmoid": sigmoid, "softplus": softplus})
    assert parse_expression(text, syms) == want
    assert sp.srepr(parse_expression(text, syms)) == sp.srepr(want)


def test_caret_is_a_power_and_bad_syntax_names_expr():
    """'^' is a power (as sympy's convert_xor); bad syntax raises ValueError naming expr, not a raw
    SympifyError. [theory: SYM-6]"""
    syms = symbols()
    assert parse_expression("a^2", syms) == syms["a"] ** 2
    for text in ["a +", "(a", "a)", "a b", "2**", "", "   ", "a,,b", "tanh()", "tanh(a,)"]:
        with pytest.raises(ValueError, match="expr"):
            sy.SymbolicModel(text, params=["a"], inputs=["x_0"])


def test_no_eval_exec_or_pickle_in_the_package():
    """No eval/exec/compile of strings, no pickle, no allow_pickle=True and no sympify of a string anywhere in
    sgdsde/ (the done-criterion grep, as a test). [theory: SYM-6]"""
    pattern = re.compile(
        r"(?<![\w.])(eval|exec|compile)\(|\bpickle\b|allow_pickle\s*=\s*True|sympify\(|parse_expr\("
    )
    hits = []
    for py in sorted((ROOT / "sgdsde").rglob("*.py")):
        for i, line in enumerate(py.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{py.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)
