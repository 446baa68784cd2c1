"""Harness: the package's layout rules, read from its source with ``ast`` (nothing imported).

* Dependencies run one way, down the layers: servers <- engine <- checkers <- lessons <-
  report, play <- commands <- testing. A package imports its own modules and those of
  the layers below it; report and play do not import each other; input_files.py (the
  bounded file reader, at the top level) is for everyone.
* No private name (``_name``) is imported from another module.
* No module of the package is over 600 lines.
* One module asks PostgreSQL whether a session is blocked.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "acid_lab"

# package -> its layer; a module may import from its own package and from lower layers
LAYERS = {"servers": 0, "engine": 1, "checkers": 2, "lessons": 3, "report": 4, "play": 4,
          "commands": 5, "testing": 6,
          "__main__": 7}  # python -m acid_lab: the entry point, above everything
FOR_EVERYONE = {"acid_lab", "acid_lab.input_files"}
MAX_LINES = 600
BLOCKED_CHECK = "pg_isolation_test_session_is_blocked"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module imported, names taken from it) for every import of the file,
    those inside functions included: a dependency is one wherever it is written."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                package = _name(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                module = ".".join(package[:len(package) - node.level + 1] + [module]).rstrip(".")
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def _package(module: str) -> str | None:
    """The layer's package of an acid_lab module (None for what everyone may use)."""
    if module in FOR_EVERYONE or not module.startswith("acid_lab."):
        return None
    return module.split(".")[1]


def _upward_imports() -> list[str]:
    wrong = []
    for path in _modules():
        importer = _package(_name(path))
        if importer is None:
            continue
        for line, module, names in _imports(path):
            # ``from acid_lab import engine`` names a package: judge each name given
            targets = ([f"{module}.{name}" for name in names] if module == "acid_lab"
                       else [module])
            for target in targets:
                imported = _package(target)
                if imported is None or imported == importer:
                    continue
                if LAYERS[imported] >= LAYERS[importer]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} ({importer}) imports "
                                 f"{target} ({imported})")
    return wrong


def _private_imports() -> list[str]:
    """``from acid_lab.x import _name`` anywhere (package, tests, bench, conftest), and
    ``module._name`` on a module of the package imported under the name ``module``."""
    known = {_name(path) for path in _modules()}
    wrong = []
    sources = [*_modules(), *sorted((ROOT / "tests").rglob("*.py")),
               *sorted((ROOT / "bench").rglob("*.py")), ROOT / "conftest.py"]
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules = set()  # local names bound to a module of the package
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("acid_lab"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports "
                                     f"{alias.name} from {node.module}")
                    if f"{node.module}.{alias.name}" in known:
                        modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                modules.update(alias.asname for alias in node.names
                               if alias.asname and alias.name in known)
        wrong += [f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}"
                  for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in modules and node.attr.startswith("_")
                  and not node.attr.startswith("__")]
    return wrong


def _long_modules() -> list[str]:
    return [f"{path.relative_to(ROOT)}: {lines} lines" for path in _modules()
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]


def _blocked_check_modules() -> list[str]:
    return [str(path.relative_to(ROOT)) for path in _modules()
            if BLOCKED_CHECK in path.read_text(encoding="utf-8")]


def test_imports_run_down_the_layers():
    """Scenario: read every import of every module of acid_lab (inside functions too).

    Outcome: none imports from its own layer's other package or from a higher layer
    (servers <- engine <- checkers <- lessons <- report, play <- commands <- testing).
    """
    assert _upward_imports() == []


def test_no_private_name_is_imported_from_another_module():
    """Scenario: read every import of the package, the tests, the benches and conftest.

    Outcome: no ``from acid_lab... import _name`` and no ``module._name`` on a module of
    the package: what another module uses is public.
    """
    assert _private_imports() == []


def test_no_module_is_over_600_lines():
    assert _long_modules() == []


def test_one_module_asks_whether_a_session_is_blocked():
    """Outcome: pg_isolation_test_session_is_blocked is named by exactly one module."""
    assert len(_blocked_check_modules()) == 1, _blocked_check_modules()
