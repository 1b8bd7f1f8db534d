"""The layer rule: a package imports only packages below it, so the folders read as the architecture.

Lowest first (README, Architecture):
  infra (contracts, errors, settings, clients, stack) -> sim -> worldmodel -> registry
  -> learner | fleet_agent -> flows | dashboard -> benchmarks -> cli
Packages on one layer (separated by |) do not import each other. Inside infra, the contracts and
the error base import nothing else of the project: both robots and learner depend on them.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = (
    ("infra",),
    ("sim",),
    ("worldmodel",),
    ("registry",),
    ("learner", "fleet_agent"),
    ("flows", "dashboard"),
    ("benchmarks",),
    ("cli",),
)
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
FOUNDATIONS = ("infra.contracts", "infra.errors")  # they import only each other


def imported_modules(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if "." not in node.module:  # `from infra import settings` depends on infra.settings
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def violations(module: str, source: str) -> list[str]:
    """What `module` (dotted name) imports against the layer rule."""
    package, out = module.split(".")[0], []
    for target in sorted(imported_modules(source)):
        other = target.split(".")[0]
        if other not in RANK or other == package:
            continue
        if RANK[other] >= RANK[package]:
            where = "a higher layer" if RANK[other] > RANK[package] else "a package on its own layer"
            out.append(f"{module} imports {target}, {where}")
    if module.startswith(FOUNDATIONS):
        out += [
            f"{module} imports {t}: contracts and errors import nothing else of the project"
            for t in sorted(imported_modules(source))
            if t.split(".")[0] in RANK and not t.startswith(FOUNDATIONS)
        ]
    return out


def project_modules() -> dict[str, str]:
    modules = {}
    for package in RANK:
        for path in sorted((ROOT / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[dotted] = path.read_text()
    return modules


def test_every_package_imports_only_packages_below_it():
    found = [v for module, source in project_modules().items() for v in violations(module, source)]
    assert found == [], "\n".join(found)


def test_every_package_is_on_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(RANK), f"place {packages ^ set(RANK)} in LAYERS"


def test_an_upward_import_is_reported_even_inside_a_function():
    lazy = "def f():\n    from flows.improvement import improvement_round\n"
    assert violations("worldmodel.train", lazy) == ["worldmodel.train imports flows.improvement, a higher layer"]
    assert violations("learner.ingest", "import fleet_agent.fleet\n") == [
        "learner.ingest imports fleet_agent.fleet, a package on its own layer"
    ]
    assert violations("infra.contracts.episode", "from infra.settings import Settings\n") == [
        "infra.contracts.episode imports infra.settings: contracts and errors import nothing else of the project"
    ]
    assert violations("flows.improvement", "from learner.ingest import EpisodeIngestor\n") == []


def test_what_runs_beside_a_prefect_client_does_not_import_prefect_first():
    """Prefect reads its API URL when it is first imported: a module that imports it before
    `use_prefect` points it at the configured server leaves the process on a server of its own."""
    import subprocess
    import sys

    modules = ["benchmarks.fleet_scale", "benchmarks.ingest", "benchmarks.dashboard", "registry.canary_telemetry"]
    code = f"import sys\nfor m in {modules}: __import__(m)\nprint('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
