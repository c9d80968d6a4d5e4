from __future__ import annotations

import subprocess
import sys


def test_the_package_is_torch_free() -> None:
    """Importing every module (and running nothing heavy) loads neither torch nor the forward
    model, so the service side can use it."""
    code = ("import sys\n"
            "import worker.ventilation.breaths, worker.ventilation.export, "
            "worker.ventilation.heart, worker.ventilation.lung_mask, "
            "worker.ventilation.parameters, worker.ventilation.regional, "
            "worker.ventilation.signal, worker.ventilation.space\n"
            "bad = [m for m in ('torch', 'worker.forward.model', 'gmsh', 'nibabel') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
