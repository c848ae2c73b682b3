"""The package's floor plan in figures: modules, import cycles, the longest import chain, the
largest module, and the places outside protocols/ that know a protocol by name.

    python benchmarks/floor_plan.py [--json OUT]

Every `import` counts, module level or inside a function: a lazy import still ties two modules.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "msm4sr", "baselines", "protocols")
# the names a runner must not know: protocols, their modes and the split attributes once probed
PROTOCOL_WORDS = {"leave_one_out", "cold_start", "cross_domain", "zero_shot", "extra_test", "sources"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def protocol_mentions(name: str, path: Path) -> list[int]:
    """Lines outside protocols/ whose string constants name a protocol, mode or split attribute.
    CLI option defaults (the user's default protocol) are the one place a name may stay."""
    if name.startswith("protocols"):
        return []
    lines = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in PROTOCOL_WORDS:
            lines.add(node.lineno)
    return sorted(lines)


def floor_plan() -> dict:
    modules = project_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        graph.add_edges_from((name, dep) for dep in imports_of(name, path, modules))
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    dag = nx.condensation(graph)
    chain = nx.dag_longest_path(dag)
    members = dag.graph["mapping"]
    by_scc: dict[int, list[str]] = {}
    for mod, scc in members.items():
        by_scc.setdefault(scc, []).append(mod)
    lines = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    largest = max(lines, key=lines.get)
    mentions = {name: m for name, path in modules.items() if (m := protocol_mentions(name, path))}
    return {
        "modules": len(modules),
        "packages": sorted({n for n, p in modules.items() if p.name == "__init__.py"}),
        "import_cycles": len(cycles),
        "files_in_cycles": sum(len(c) for c in cycles),
        "cycles": cycles,
        "longest_import_chain": len(chain),
        "chain": [sorted(by_scc[s])[0] for s in chain],
        "largest_module": largest,
        "largest_module_lines": lines[largest],
        "protocol_name_places": sum(len(m) for m in mentions.values()),
        "protocol_name_files": {k: v for k, v in sorted(mentions.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    plan = floor_plan()
    for key in ("modules", "import_cycles", "files_in_cycles", "longest_import_chain",
                "largest_module", "largest_module_lines", "protocol_name_places"):
        print(f"{key:22s} {plan[key]}")
    for cycle in plan["cycles"]:
        print("cycle:", " <-> ".join(cycle))
    print("chain:", " -> ".join(plan["chain"]))
    for mod, lines in plan["protocol_name_files"].items():
        print(f"protocol names in {mod}: lines {lines}")
    if args.json:
        args.json.write_text(json.dumps(plan, indent=1) + "\n")


if __name__ == "__main__":
    main()
