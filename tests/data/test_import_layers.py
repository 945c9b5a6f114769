"""The data layer's modules import one way: no module of ``prdit.data`` is part of an import cycle."""

import ast
from pathlib import Path

import prdit

SOURCE = Path(prdit.__file__).resolve().parent.parent


def import_graph() -> dict[str, set[str]]:
    """Module -> the prdit modules it imports anywhere in its body (function-level imports too).

    The package root ``prdit`` is left out: it only holds the version and lazy shortcuts to the top floor.
    """
    files = {".".join(p.relative_to(SOURCE).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (SOURCE / "prdit").rglob("*.py")}
    files.pop("prdit")
    graph = {}
    for name, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        graph[name] = {m for m in imported if m in files and m != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph[todo.pop()] - seen:
            seen.add(m)
            todo.append(m)
    return seen


def test_no_data_module_imports_itself_through_others():
    graph = import_graph()
    cycles = {m: sorted(n for n in reachable(graph, m) if m in reachable(graph, n))
              for m in graph if m.startswith("prdit.data.") and m in reachable(graph, m)}
    assert not cycles, f"import cycles through the data layer: {cycles}"


def test_volume_is_one_type_shared_by_the_readers_and_the_dicom_writer():
    from prdit.data import dicom_writer, io, volume

    assert io.Volume is dicom_writer.Volume is volume.Volume
