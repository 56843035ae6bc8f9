"""The import-layer check (`tests/import_layers.py`): it passes on the package, and fails on
each kind of mistake planted in a small package of the same name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import import_layers  # noqa: E402

PACKAGE = Path(__file__).parents[1] / "tapegrad"


def _plant(root: Path, files: dict[str, str]) -> Path:
    """A package called ``tapegrad`` under ``root``, with ``files`` (path -> source)."""
    package = root / "tapegrad"
    for name, source in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return package


def _violations(tmp_path: Path, files: dict[str, str]) -> list[str]:
    return import_layers.violations(import_layers.import_graph(_plant(tmp_path, files)))


CLEAN = {
    "_arrays/__init__.py": "",
    "_arrays/_backend.py": "import numpy as np\n",
    "_tree.py": "",
    "_core/__init__.py": "",
    "_core/_tensor.py": "from .._arrays._backend import np\nfrom .. import _tree\nfrom . import _math\n",
    "_core/_math.py": "from ._tensor import np\n",
    "_core/_tape.py": "from ._math import np\nfrom ._tensor import np\n",
    "_core/_anomaly.py": "",
}


def test_the_package_imports_only_down_the_layers_and_in_no_circle_but_the_documented_one() -> None:
    assert import_layers.violations(import_layers.import_graph(PACKAGE)) == []
    assert import_layers.main(["--root", str(PACKAGE)]) == 0


def test_a_package_laid_out_by_the_rules_passes(tmp_path: Path) -> None:
    # The one allowed circle (_tensor <-> _math) is in it.
    assert _violations(tmp_path, CLEAN) == []


def test_an_import_running_up_the_layers_is_named(tmp_path: Path) -> None:
    files = {**CLEAN, "_tree.py": "from ._core._anomaly import np\n"}
    assert _violations(tmp_path, files) == [
        "tapegrad._tree (layer 2) imports tapegrad._core._anomaly (layer 3): "
        "imports must run down the layers"
    ]


def test_a_lazy_import_inside_a_function_counts(tmp_path: Path) -> None:
    files = {**CLEAN, "_arrays/_backend.py": "def f():\n    from .._core import _anomaly\n"}
    assert _violations(tmp_path, files) == [
        "tapegrad._arrays._backend (layer 1) imports tapegrad._core._anomaly (layer 3): "
        "imports must run down the layers"
    ]


def test_a_circle_other_than_the_documented_one_is_named(tmp_path: Path) -> None:
    # _math -> _tape -> _math, inside one layer: the tape must stand above its ops.
    files = {**CLEAN, "_core/_math.py": "from ._tensor import np\nfrom ._tape import np\n"}
    assert _violations(tmp_path, files) == [
        "import circle among: tapegrad._core._math, tapegrad._core._tape"
    ]


def test_joining_the_documented_circle_is_a_circle(tmp_path: Path) -> None:
    # _tensor may import the op modules; it may not import the tape that imports it.
    files = {**CLEAN, "_core/_tensor.py": CLEAN["_core/_tensor.py"] + "from . import _tape\n"}
    assert _violations(tmp_path, files) == [
        "import circle among: tapegrad._core._math, tapegrad._core._tape, tapegrad._core._tensor"
    ]


def test_a_module_in_no_layer_is_named(tmp_path: Path) -> None:
    files = {**CLEAN, "_stray.py": ""}
    assert _violations(tmp_path, files) == [
        f"tapegrad._stray: in no layer; add it to LAYERS in {import_layers.__file__}"
    ]


@pytest.mark.parametrize(
    ("source", "imported"),
    [
        ("from . import _tree\n", "tapegrad._tree"),
        ("from ._tree import x\n", "tapegrad._tree"),
        ("import tapegrad._tree\n", "tapegrad._tree"),
        ("from tapegrad._core import _tape\n", "tapegrad._core._tape"),
        ("from ._core._tape import Tape\n", "tapegrad._core._tape"),
    ],
)
def test_every_spelling_of_an_import_is_read(tmp_path: Path, source: str, imported: str) -> None:
    package = _plant(tmp_path, {**CLEAN, "nn.py": source})
    assert import_layers.import_graph(package)["tapegrad.nn"] == {imported}
