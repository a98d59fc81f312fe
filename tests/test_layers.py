"""The package's import graph: no cycles, and layers that only look down.

Read from the source with `ast` (nothing is imported), so the test is fast and
sees imports inside functions too. Imports under `if TYPE_CHECKING:` are only
annotations and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import stockstream

PACKAGE = Path(stockstream.__file__).parent

# Highest first: a module may import its own layer and the layers below it.
# Modules in no layer (updates, symbols, config, errors, gate, outbox, ...) are
# the base: they may import only other base modules.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry", ("__main__", "cli", "commands", "server", "app", "bench")),
    ("wiring", ("node", "metrics", "http", "tls")),
    ("transports", ("transports",)),
    ("sessions", ("session", "recovery")),
    ("hub", ("hub", "candle_streams")),
    ("ways in", ("auth", "publisher", "simulator", "kafka_bridge")),
    ("broker", ("broker",)),
]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["stockstream", *parts])


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:`."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return out


def imports_of(path: Path, modules: set[str], package_dir: Path = PACKAGE) -> set[str]:
    """The package modules `path` imports at run time."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import sub` imports the submodule; `from mod import name` the module.
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin for alias in node.names
            ]
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph(package_dir: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports at run time, from the source under `package_dir`."""
    paths = sorted(package_dir.rglob("*.py"))
    modules = {module_name(p, package_dir) for p in paths}
    graph = {module_name(p, package_dir): imports_of(p, modules, package_dir) for p in paths}
    # A submodule's import of its own package is Python's ordinary package
    # layout (the package's __init__ holds the shared interface), not a cycle.
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def layer_of(module: str) -> int:
    """Index into LAYERS (0 is the top); len(LAYERS) for the base."""
    short = module.removeprefix("stockstream").removeprefix(".")
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(short == p or short.startswith(p + ".") for p in prefixes):
            return index
    return len(LAYERS)


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The checker below reports a cycle when there is one (so its silence means something)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_the_imports() -> None:
    """The import graph holds known edges: relative, `from . import sub`, and imports inside functions."""
    graph = import_graph()
    assert "stockstream.hub" in graph["stockstream.session"]
    assert "stockstream.transports.eio" in graph["stockstream.transports.socketio_transport"]
    assert "stockstream.commands.token" in graph["stockstream.cli"]  # imported inside a function
    assert "stockstream.node" not in graph["stockstream.metrics"]  # only under TYPE_CHECKING


def test_the_hub_does_not_know_sessions() -> None:
    """The hub names no session, not even for type checking: it delivers to its own Subscriber protocol."""
    source = (PACKAGE / "hub.py").read_text()
    assert "from .session" not in source and "stockstream.session" not in source


def test_no_import_cycles() -> None:
    """No module of the package imports, directly or through others, a module that imports it."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_lower_layers_do_not_import_upper_ones() -> None:
    """Dependencies point one way: entry -> wiring -> transports -> sessions -> hub -> ways in -> broker -> base."""
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0] if layer_of(module) < len(LAYERS) else 'base'})"
        f" imports {dep} ({LAYERS[layer_of(dep)][0]})"
        for module, deps in sorted(import_graph().items())
        for dep in sorted(deps)
        if layer_of(dep) < layer_of(module)
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_features_do_not_import_the_command_line() -> None:
    """Only the entry layer imports stockstream.cli or stockstream.commands."""
    offenders = [
        f"{module} imports {dep}"
        for module, deps in sorted(import_graph().items())
        for dep in sorted(deps)
        if (dep == "stockstream.cli" or dep.startswith("stockstream.commands")) and layer_of(module) != 0
    ]
    assert not offenders, "\n".join(offenders)


def longest_chain(graph: dict[str, set[str]], start: str) -> list[str]:
    """The longest import chain from `start` (the graph has no cycle): each module imports the next."""
    memo: dict[str, list[str]] = {}

    def chain(node: str) -> list[str]:
        if node not in memo:
            tails = [chain(dep) for dep in sorted(graph.get(node, ()))]
            memo[node] = [node, *max(tails, key=len, default=[])]
        return memo[node]

    return chain(start)


# The longest import chain from the command line, in imports (a chain of n modules
# is n - 1 floors). It was 15 when the HTTP documents stood on the publish route,
# the routes and the whole Node; a change that makes it longer must say why here.
MAX_FLOORS_FROM_THE_COMMAND_LINE = 12


def test_the_longest_chain_finder_follows_the_longest_path() -> None:
    """The depth measure below picks the longest of several import chains."""
    graph = {"a": {"b", "c"}, "b": {"d"}, "c": set(), "d": {"e"}, "e": set()}
    assert longest_chain(graph, "a") == ["a", "b", "d", "e"]


def test_the_import_tower_from_the_command_line_stays_low() -> None:
    """The longest chain of imports from stockstream.cli down to the base is at most
    MAX_FLOORS_FROM_THE_COMMAND_LINE imports long (imports inside functions included)."""
    chain = longest_chain(import_graph(), "stockstream.cli")
    floors = len(chain) - 1
    assert floors <= MAX_FLOORS_FROM_THE_COMMAND_LINE, f"{floors} floors: " + " -> ".join(
        m.removeprefix("stockstream.") for m in chain
    )


def test_the_http_package_does_not_import_the_wiring() -> None:
    """stockstream.http's routes take the Node they serve as an argument: no module of
    the package imports stockstream.node at run time, and the API documents import only
    the base and the HTTP vocabulary in http.common."""
    graph = import_graph()
    http_modules = [m for m in graph if m == "stockstream.http" or m.startswith("stockstream.http.")]
    assert "stockstream.http.docs" in http_modules
    assert not [m for m in http_modules if "stockstream.node" in graph[m]]
    upper = [d for d in graph["stockstream.http.docs"] if layer_of(d) < len(LAYERS) and d != "stockstream.http.common"]
    assert not upper, f"stockstream.http.docs imports {upper}"


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        for dep in graph.get(stack.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def test_the_benchmark_is_outside_the_runtime() -> None:
    """Only the benchmark's own command (stockstream.commands.bench, when it runs) imports
    stockstream.bench; the server never reaches it."""
    graph = import_graph()
    importers = sorted(
        m
        for m, deps in graph.items()
        if not m.startswith("stockstream.bench") and any(d.startswith("stockstream.bench") for d in deps)
    )
    assert importers == ["stockstream.commands.bench"]
    assert not [m for m in reachable(graph, "stockstream.server") if m.startswith("stockstream.bench")]
