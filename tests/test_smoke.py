"""The package imports without sympy and runs a tiny simulation."""

import subprocess
import sys


def test_import_does_not_import_sympy():
    code = "import sgdsde, sys; assert 'sympy' not in sys.modules, 'sympy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
