"""The issue scripts (one per reproduced paper) run end to end in their --quick modes and print their headline
last line in a fixed format (their numbers are checked by the tests of each theory; a file of its own so that
the two test workers share the long script runs)."""

import re

import pytest
from helpers import run_script

# the issue scripts' last lines: the headline figures in a fixed format
LAST_LINES = {
    "fig_resetting": r"resetting: mfpt_max_z=\d+\.\d+ benefit=-?\d+\.\d+ ± \d+\.\d+",
    "fig_large_lr": r"large_lr: test_gap=-?\d+\.\d+ ± \d+\.\d+ order_large=[PQ] order_small=[PQ]",
    "fig_kernel_rich": r"kernel_rich: max_kkt_gap=\S+ max_gd_gap=\S+",
    "fig_modified_flow": r"modified_flow: gd_order=\d+\.\d+ smith_order=\d+\.\d+",
    "fig_sharp_minima": r"sharp_minima: eta_over_B_collapse=\d+\.\d+ kramers_max_z=\d+\.\d+",
}


@pytest.mark.parametrize("name", sorted(LAST_LINES))
def test_issue_scripts_quick_print_their_last_line(name, tmp_path):
    png = tmp_path / f"{name}.png"
    stdout = run_script(f"{name}.py", "--quick", "--out", str(png), cwd=tmp_path)
    assert png.stat().st_size > 10_000, "no figure written"
    last = stdout.strip().splitlines()[-1]
    assert re.fullmatch(LAST_LINES[name], last), last
