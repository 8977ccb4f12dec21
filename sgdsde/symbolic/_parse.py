"""User expressions parsed from a whitelist, never evaluated: arithmetic, powers, the known functions and the
declared symbols (theory/symbolic.md, SYM-6). ``sympy.sympify`` would ``eval`` the string."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import sympy as sp

from ._functions import SYMBOLIC_ACTIVATIONS, sigmoid, softplus

# name -> sympy callable: the functions a user expression may call
FUNCTIONS = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "tanh": sp.tanh,
    "atan": sp.atan,
    "abs": sp.Abs,
    "Abs": sp.Abs,
    "sign": sp.sign,
    "floor": sp.floor,
    "Heaviside": sp.Heaviside,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "relu": SYMBOLIC_ACTIVATIONS["relu"],
}
CONSTANTS = {"pi": sp.pi, "E": sp.E}

# Nesting deeper than this is refused: each level costs the recursive parser ~5 Python frames, and Python
# stops at 1000 (a raw RecursionError otherwise).
MAX_DEPTH = 100
# sympy computes a power of two numeric literals exactly; beyond this many digits (|e|·|log10 b|) it would
# run for minutes and gigabytes ("9**9**9**9"), so it is refused.
MAX_POWER_DIGITS = 10_000

_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>\*\*|[-+*/^(),]))"
)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].lstrip()[:1]
            where = len(text) - len(text[pos:].lstrip())
            raise ValueError(f"expr: token {bad!r} at position {where} is not allowed in {text!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str, symbols: Mapping[str, sp.Symbol]):
        self.text, self.symbols, self.toks, self.i = text, symbols, _tokens(text), 0
        self.depth = 0

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(self.peek(), f"nesting deeper than {MAX_DEPTH} levels")

    def peek(self):
        return self.toks[self.i]

    def take(self, value=None):
        tok = self.toks[self.i]
        if value is not None and tok[1] != value:
            self.fail(tok, f"expected {value!r}")
        self.i += 1
        return tok

    def fail(self, tok, why: str):
        shown = tok[1] if tok[0] != "end" else "end of expression"
        raise ValueError(f"expr: {why}, got {shown!r} at position {tok[2]} in {self.text!r}")

    def parse(self) -> sp.Expr:
        e = self.sum()
        if self.peek()[0] != "end":
            self.fail(self.peek(), "expected an operator or the end")
        return e

    def sum(self):
        e = self.product()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            rhs = self.product()
            e = e + rhs if op == "+" else e - rhs
        return e

    def product(self):
        e = self.unary()
        while self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            rhs = self.unary()
            e = e * rhs if op == "*" else e / rhs
        return e

    def unary(self):
        if self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            self.enter()
            e = self.unary()
            self.depth -= 1
            return -e if op == "-" else e
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek()[1] in ("**", "^"):
            tok = self.take()
            self.enter()
            exponent = self.unary()  # right-associative; a**-b allowed
            self.depth -= 1
            if (
                isinstance(base, sp.Rational)
                and isinstance(exponent, sp.Rational)
                and abs(base) not in (0, 1)
            ):
                digits = abs(float(exponent)) * abs(math.log10(abs(base.p)) - math.log10(base.q))
                if digits > MAX_POWER_DIGITS:
                    self.fail(
                        tok, f"a power of numbers with ~{digits:.3g} digits (more than {MAX_POWER_DIGITS})"
                    )
            return base**exponent
        return base

    def atom(self):
        tok = self.take()
        kind, value = tok[0], tok[1]
        if kind == "number":
            return sp.Float(value) if any(c in value for c in ".eE") else sp.Integer(value)
        if value == "(":
            self.enter()
            e = self.sum()
            self.take(")")
            self.depth -= 1
            return e
        if kind == "name":
            if "__" in value:
                self.fail(tok, "names with '__' are not allowed")
            if self.peek()[1] == "(":
                if value not in FUNCTIONS:
                    self.fail(tok, f"unknown function (allowed: {sorted(FUNCTIONS)})")
                self.take("(")
                self.enter()
                args = [self.sum()]
                while self.peek()[1] == ",":
                    self.take()
                    args.append(self.sum())
                self.take(")")
                self.depth -= 1
                try:
                    return FUNCTIONS[value](*args)
                except TypeError as err:  # the wrong number of arguments
                    self.fail(tok, f"{len(args)} argument(s) do not fit this function ({err})")
            if value in self.symbols:
                return self.symbols[value]
            if value in CONSTANTS:
                return CONSTANTS[value]
            self.fail(tok, f"unknown name (declared symbols: {sorted(self.symbols)})")
        self.fail(tok, "expected a number, a name or '('")


def parse_expression(text: str, symbols: Mapping[str, sp.Symbol]) -> sp.Expr:
    """The sympy expression of ``text`` over the declared ``symbols`` (name → Symbol).

    Only numbers, the declared symbols, the constants pi and E, the functions in ``FUNCTIONS``, + − * / ** ^
    and parentheses are accepted; anything else (attribute access, indexing, strings, lambdas, unknown names,
    dunder names) raises ValueError naming the token and its position. Nothing is evaluated.
    """
    if not isinstance(text, str):
        raise ValueError(f"expr must be a string here, got {type(text).__name__}")
    if text.strip() == "":
        raise ValueError("expr is empty")
    return _Parser(text, dict(symbols)).parse()
