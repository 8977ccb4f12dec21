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
# The expression's size: longer texts are refused before tokenizing (a 20,000-term sum "1*x0**2 + …" is
# about 230,000 characters and parses in ~6 s: linear, sympy's own cost per term).
MAX_LENGTH = 500_000
# Every number the expression holds (a literal, or what sympy computes from literals: a power 2**1000, a
# product of coefficients) must be a float64 number after code generation: numerator and denominator below
# 2**1024 (~308 digits). sympy computes a power of numbers exactly, so its size (|e|·|log10 b| digits) is
# checked before it is computed ("9**9**9**9" would run for minutes).
MAX_NUMBER_BITS = 1024
MAX_POWER_DIGITS = 308
# A numeric exponent of any other base (a symbol, sqrt(2), a product) is at most this in magnitude: sympy
# expands (2*a)**n into 2**n*a**n and sqrt(2)**n into 2**(n/2) exactly.
MAX_EXPONENT = 1000
# A product of more factors than this is built in one step (linear time) instead of factor by factor:
# equal in value, its tree may differ from sympy's step-by-step one where a partial product collapses.
STEPWISE_FACTORS = 32

_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>\*\*|[-+*/^(),]))"
)


def _number_fits(n) -> bool:
    """Whether the sympy number ``n`` is a float64 number: finite, and a fraction's numerator and
    denominator below 2**MAX_NUMBER_BITS."""
    if n.is_Rational:
        return abs(n.p).bit_length() <= MAX_NUMBER_BITS and n.q.bit_length() <= MAX_NUMBER_BITS
    if n.is_Float:
        try:
            return math.isfinite(float(n))
        except (OverflowError, ValueError):
            return False
    return True  # nan, oo, zoo and the like are sympy's answers to 1/0 … and stay as they are


def _bits(c) -> int:
    """log2 of a rational coefficient's numerator plus its denominator's (0 for ±1 and non-rationals)."""
    if not c.is_Rational or c == 0:
        return 0
    return abs(int(c.p)).bit_length() - 1 + int(c.q).bit_length() - 1


def _shown(text: str, pos: int) -> str:
    """``text`` as quoted in an error: whole when short, else 60 characters around ``pos``."""
    if len(text) <= 200:
        return repr(text)
    lo = max(0, pos - 30)
    return f"{'…' if lo else ''}{text[lo : lo + 60]!r}… ({len(text):,} characters)"


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        # a non-empty match always sets lastgroup (every alternative is a named group)
        if m is None or m.end() == pos or m.lastgroup is None:
            bad = text[pos:].lstrip()[:1]
            where = len(text) - len(text[pos:].lstrip())
            raise ValueError(
                f"expr: token {bad!r} at position {where} is not allowed in {_shown(text, where)}"
            )
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
        raise ValueError(
            f"expr: {why}, got {shown[:40]!r} at position {tok[2]} in {_shown(self.text, tok[2])}"
        )

    def parse(self) -> sp.Expr:
        e = self.sum()
        if self.peek()[0] != "end":
            self.fail(self.peek(), "expected an operator or the end")
        return e

    def sum(self):
        # All terms at once: one Add (linear; adding term by term re-sorts the sum each time, quadratic).
        # Add's flattening is associative, so this is the object a + b + c … builds step by step.
        start = self.peek()
        terms = [self.product()]
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            rhs = self.product()
            terms.append(rhs if op == "+" else -rhs)
        if len(terms) == 1:
            return terms[0]
        denominators = {abs(int(c.q)) for c in (t.as_coeff_Mul()[0] for t in terms) if c.is_Rational}
        if sum(q.bit_length() for q in denominators) > MAX_NUMBER_BITS:
            self.fail(start, f"a sum of fractions whose common denominator exceeds 2**{MAX_NUMBER_BITS}")
        return self.number_check(sp.Add(*terms), start)

    def product(self):
        start = self.peek()
        e = self.unary()
        n_factors, rest = 0, []
        c = e.as_coeff_Mul()[0]
        bits = _bits(c)
        while self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            rhs = self.unary()
            c = rhs.as_coeff_Mul()[0]
            bits += _bits(c)
            if bits > 2 * MAX_NUMBER_BITS:
                self.fail(start, f"a product of numbers beyond 2**{MAX_NUMBER_BITS}")
            n_factors += 1
            if n_factors <= STEPWISE_FACTORS:  # step by step, as Python's a*b/c: sympy's own object
                e = e * rhs if op == "*" else e / rhs
            else:  # then all at once (Python's e / r is Mul(e, Pow(r, -1)))
                rest.append(rhs if op == "*" else sp.Pow(rhs, -1))
        if rest:
            e = sp.Mul(e, *rest)
        return self.number_check(e, start) if n_factors else e

    def number_check(self, e, tok):
        """``e``, or ValueError if it holds a number beyond float64 (computed by sympy from literals)."""
        for n in e.atoms(sp.Number):
            if not _number_fits(n):
                self.fail(
                    tok,
                    f"a number beyond float64's range ({abs(n.p).bit_length() if n.is_Rational else '∞'} bits)",
                )
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
            if isinstance(base, sp.Rational) and isinstance(exponent, sp.Rational):
                if abs(base) not in (0, 1):
                    digits = abs(float(exponent)) * abs(math.log10(abs(base.p)) - math.log10(base.q))
                    if digits > MAX_POWER_DIGITS:
                        self.fail(
                            tok,
                            f"a power of numbers with ~{digits:.3g} digits (more than {MAX_POWER_DIGITS})",
                        )
            elif exponent.is_Number and not abs(exponent) <= MAX_EXPONENT:
                self.fail(tok, f"a numeric exponent of magnitude above {MAX_EXPONENT}")
            return self.number_check(base**exponent, tok)
        return base

    def atom(self):
        tok = self.take()
        kind, value = tok[0], tok[1]
        if kind == "number":
            if not any(c in value for c in ".eE"):
                digits = value.lstrip("0")
                if len(digits) > MAX_POWER_DIGITS:
                    self.fail(
                        tok, f"an integer literal of {len(digits)} digits (more than {MAX_POWER_DIGITS})"
                    )
                return sp.Integer(value)
            mantissa = value.split("e")[0].split("E")[0]
            x = float(value)
            if not math.isfinite(x) or (x == 0 and mantissa.strip("0.") != ""):
                self.fail(tok, "a float literal beyond float64's range (it would be inf or 0)")
            return sp.Float(value)
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

    Limits (each a ValueError naming expr and the limit): at most ``MAX_LENGTH`` characters and ``MAX_DEPTH``
    levels of nesting; every number, literal or computed from literals, within float64 (``MAX_NUMBER_BITS``;
    a float literal that would be inf or 0, such as 1e999999, is refused); a numeric exponent of a non-number
    base at most ``MAX_EXPONENT`` in magnitude; no symbol named like a function or constant. Sums and long
    products are built in linear time.
    """
    if not isinstance(text, str):
        raise ValueError(f"expr must be a string here, got {type(text).__name__}")
    if text.strip() == "":
        raise ValueError("expr is empty")
    if len(text) > MAX_LENGTH:
        raise ValueError(
            f"expr: {len(text):,} characters, more than the limit {MAX_LENGTH:,} ({text[:40]!r}…)"
        )
    clash = sorted(set(symbols) & (set(FUNCTIONS) | set(CONSTANTS)))
    if clash:
        raise ValueError(
            f"expr: the symbols {clash} are named like the parser's functions or constants; rename them "
            f"(functions: {sorted(FUNCTIONS)}, constants: {sorted(CONSTANTS)})"
        )
    return _Parser(text, dict(symbols)).parse()
