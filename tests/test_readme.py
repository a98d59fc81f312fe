"""README's description of the code stays in step with the code: its module table
names every module of the package, and its Architecture paragraph lists the layers
of tests/test_layers.py, in the same order, with the same modules."""

from __future__ import annotations

import re

from tests.support.servers import REPO_ROOT
from tests.test_layers import LAYERS, PACKAGE

README = REPO_ROOT / "README.md"
CODE = re.compile(r"`([^`]+)`")


def module_table() -> list[str]:
    """The rows of the Design section's table that starts with `| Module |`."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Module |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def subpackages() -> set[str]:
    """The package's subpackages as `name/` (directories of data, like static/, are not)."""
    return {p.parent.relative_to(PACKAGE).as_posix() + "/" for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}


def listed_modules(rows: list[str], packages: set[str]) -> set[str]:
    """Paths under stockstream/ the table names. A package is named as `pkg/` (its
    __init__.py); in a row whose first cell names one package, a bare `name.py`
    is that package's file, elsewhere a top-level module."""
    listed: set[str] = set()
    for row in rows:
        cells = row.strip("|").split("|")
        homes = [c for c in CODE.findall(cells[0]) if c in packages]
        home = homes[0] if len(homes) == 1 else ""
        for name in CODE.findall(row):
            if name in packages:
                listed.add(name + "__init__.py")
            elif name.endswith(".py"):
                listed.add(name if "/" in name else home + name)
    return listed


def package_modules() -> list[str]:
    return sorted(
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).as_posix() != "__init__.py"
    )


def architecture_layers() -> list[tuple[str, list[str]]]:
    """(name, modules) of each layer in the Architecture paragraph, highest first."""
    text = README.read_text()
    paragraph = text[text.index("**Architecture.**") :]
    paragraph = paragraph[: paragraph.index("\n\n")]
    chain = paragraph[paragraph.index("):\n") + 3 :]
    layers = []
    for part in chain.split("→"):
        match = re.match(r"\s*([a-z][a-z ]*?)\s*\((.*?)\)", part, re.S)
        assert match, f"README's Architecture paragraph: cannot read a layer in {part.strip()[:60]!r}"
        layers.append((match.group(1), [m.rstrip("/") for m in CODE.findall(match.group(2))]))
    return layers


def test_the_table_reader_resolves_packages() -> None:
    """The table reader puts a package row's bare file names in that package."""
    rows = [
        "| `broker/` | `cluster.py` (sharded) |",
        "| `cli.py`, `__main__.py` | the command line |",
        "| `demo.py` + `static/` | the demo page |",
    ]
    assert listed_modules(rows, {"broker/"}) == {
        "broker/__init__.py",
        "broker/cluster.py",
        "cli.py",
        "__main__.py",
        "demo.py",
    }


def test_every_module_is_in_the_readme_table() -> None:
    """Every module under stockstream/ appears in README's module table."""
    listed = listed_modules(module_table(), subpackages())
    missing = [m for m in package_modules() if m not in listed]
    assert not missing, (
        "README.md's module table (section Design) does not name: "
        + ", ".join(f"stockstream/{m}" for m in missing)
        + " — add a row, or name the file in its package's row"
    )


def test_the_readme_table_names_no_module_that_does_not_exist() -> None:
    """Every module the table names exists."""
    gone = sorted(listed_modules(module_table(), subpackages()) - set(package_modules()))
    assert not gone, "README.md's module table names modules that do not exist: " + ", ".join(gone)


def test_the_readme_layers_are_the_tested_layers() -> None:
    """README's Architecture paragraph names the layers of tests/test_layers.py, in order,
    each with the same modules, then the base."""
    layers = architecture_layers()
    assert [name for name, _ in layers] == [name for name, _ in LAYERS] + ["base"]
    for (name, modules), (_, prefixes) in zip(layers, LAYERS):
        assert sorted(modules) == sorted(prefixes), f"layer {name}: README {modules}, tests/test_layers.py {prefixes}"
