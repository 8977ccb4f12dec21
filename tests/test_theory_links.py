"""Keeps theory/ and tests/ linked: every claim ID is checked by a test, every cited ID exists.

Convention: a claim in theory/*.md is a heading ``### ID: statement`` (ID like SME-1, LN-2, OU-3a) with a
line ``Checked by: tests/test_x.py::test_y, …``; a test cites the claims it checks with ``[theory: ID, ID]``
in its docstring or a comment.
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
ID = r"[A-Z][A-Z0-9]*-\d+[a-z]?"
HEADING = re.compile(rf"^###\s+({ID})\s*:", re.M)
CHECKED_BY = re.compile(r"^Checked by:\s*(.+)$", re.M)
CITE = re.compile(r"\[theory:\s*([^\]]+)\]")


def claims():
    """ID → (file, Checked-by list)."""
    out = {}
    for md in sorted((ROOT / "theory").glob("*.md")):
        text = md.read_text()
        parts = HEADING.split(text)
        for ident, body in zip(parts[1::2], parts[2::2], strict=True):
            assert ident not in out, (
                f"claim {ident} defined twice ({out.get(ident, ('?',))[0]} and {md.name})"
            )
            m = CHECKED_BY.search(body)
            refs = [r.strip() for r in m.group(1).split(",")] if m else []
            out[ident] = (md.name, refs)
    return out


def citations():
    """ID → set of 'tests/file.py::test_name' citing it (by the nearest enclosing test function)."""
    out: dict[str, set[str]] = {}
    for py in sorted((ROOT / "tests").glob("test_*.py")):
        if py.name == pathlib.Path(__file__).name:
            continue
        current = None
        for line in py.read_text().splitlines():
            m = re.match(r"^(?:async\s+)?def\s+(test_\w+)|^class\s+(Test\w+)", line)
            if m:
                current = m.group(1) or m.group(2)
            for cite in CITE.findall(line):
                for ident in (c.strip() for c in cite.split(",")):
                    out.setdefault(ident, set()).add(f"tests/{py.name}::{current}")
    return out


def test_theory_folder_has_claims():
    assert len(claims()) >= 5


def test_every_claim_is_checked_by_a_citing_test():
    cited = citations()
    missing = [i for i in claims() if i not in cited]
    assert not missing, f"claims cited by no test: {missing}"


def test_every_cited_id_exists():
    known = claims()
    unknown = sorted(set(citations()) - set(known))
    assert not unknown, f"tests cite IDs not defined in theory/: {unknown}"


def test_checked_by_lists_name_real_citing_tests():
    cited = citations()
    for ident, (md, refs) in claims().items():
        assert refs, f"{md}: {ident} has no 'Checked by:' line"
        for ref in refs:
            assert ref in cited.get(ident, set()), (
                f"{md}: {ident} lists {ref}, which does not cite [theory: {ident}]"
            )
