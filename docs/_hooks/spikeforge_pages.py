"""mkdocs hook: pages generated from the code, so they cannot drift from it.

* ``reference/recipes.md`` -- every recipe key with its type, default and bounds, from the JSON Schema of the recipe
  (:func:`spikeforge.engine.recipe.recipe_schema`) and the configuration classes' docstrings;
* ``reference/cli.md`` -- the ``--help`` of every ``spikeforge`` command (:func:`spikeforge.app.cli.build_parser`);
* ``tutorials/<name>.md`` -- the jupytext percent-format scripts of ``tutorials/`` (markdown cells as text, code
  cells as code blocks), linked to the script that the test suite runs;
* ``changelog.md`` -- ``CHANGELOG.md``.

Registered in ``mkdocs.yml`` under ``hooks:``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

import spikeforge
from spikeforge.app.cli import build_parser
from spikeforge.engine.recipe import recipe_schema
from spikeforge.registry import Registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rst_roles import rst_to_markdown  # noqa: E402  (the sibling file, not a package)

ROOT = Path(__file__).resolve().parents[2]


# -- recipe reference --------------------------------------------------------------------------------------------
def _type(prop: dict, defs: dict) -> str:
    """A short type name for a JSON Schema property."""
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[1]
    if "anyOf" in prop:
        return " or ".join(dict.fromkeys(_type(p, defs) for p in prop["anyOf"]))
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object":
        return "mapping"
    return {"number": "number", "integer": "integer", "string": "string", "boolean": "bool", "null": "null"}.get(
        kind, str(kind))


def _bounds(prop: dict) -> str:
    parts = []
    for p in [prop, *prop.get("anyOf", []), prop.get("items", {})]:
        for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
                          ("minItems", "items >=")):
            if key in p:
                parts.append(f"{sign} {p[key]}")
    return ", ".join(dict.fromkeys(parts))


def _default(prop: dict) -> str:
    if "default" not in prop:
        return "(required)" if prop.get("_required") else "—"
    return f"`{json.dumps(prop['default'])}`"


def _section(title: str, schema: dict, defs: dict, required: list[str]) -> list[str]:
    lines = [f"## {title}", ""]
    doc = schema.get("description", "").strip()
    if doc:
        lines += [rst_to_markdown(doc), ""]
    lines += ["| key | type | default | bounds |", "|---|---|---|---|"]
    for key, prop in schema.get("properties", {}).items():
        prop = {**prop, "_required": key in required}
        lines.append(f"| `{key}` | {_type(prop, defs)} | {_default(prop)} | {_bounds(prop)} |")
    return lines + [""]


def recipe_reference() -> str:
    schema = recipe_schema()
    defs = schema.get("$defs", {})
    top = {k: v for k, v in schema["properties"].items() if k not in ("data", "model", "snn", "stages")}
    lines = ["# Recipe reference", "",
             "Generated from the recipe's JSON Schema (`spikeforge schema` prints it; editors such as VS Code validate "
             "recipes with it). Every key is checked when a recipe is loaded: an unknown key or a value out of bounds "
             "is one error naming it. A `stages` entry is chosen by its `kind`.", ""]
    lines += _section("Top level", {"properties": top}, defs, schema.get("required", []))
    for key, ref in (("data", "DataConfig"), ("model", "ModelSpec"), ("snn", "SNNConfig")):
        lines += _section(f"`{key}`", defs[ref], defs, defs[ref].get("required", []))
    kinds = sorted(name for name in defs if name.endswith("StageConfig"))
    for name in kinds:
        kind = defs[name]["properties"]["kind"].get("const", name)
        lines += _section(f"stage `kind: {kind}`", defs[name], defs, defs[name].get("required", []))
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------------------------
def cli_reference() -> str:
    parser = build_parser()
    lines = ["# Command line", "", "Generated from the `spikeforge` argument parser (`spikeforge COMMAND --help`).", "",
             "```text", parser.format_help().strip(), "```", ""]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        lines += [f"## `spikeforge {name}`", "", "```text", sub.format_help().strip(), "```", ""]
    return "\n".join(lines)


# -- tutorials -----------------------------------------------------------------------------------------------------
def _cells(text: str) -> list[tuple[str, list[str]]]:
    """``(kind, lines)`` of a jupytext percent-format script (the YAML header is dropped)."""
    cells: list[tuple[str, list[str]]] = []
    kind, body = None, []
    for line in text.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                cells.append((kind, body))
            kind, body = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            body.append(line)
    if kind is not None:
        cells.append((kind, body))
    return cells


def tutorial_page(path: Path) -> str:
    out = []
    for kind, body in _cells(path.read_text()):
        while body and not body[-1].strip():
            body.pop()
        if kind == "markdown":
            out.append("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body))
        elif body:
            out.append("```python\n" + "\n".join(body).strip("\n") + "\n```")
    out.append(f"*This page is the script `tutorials/{path.name}` (run it, or open it as a notebook with "
               f"`jupytext --to notebook tutorials/{path.name}`). The test suite runs it "
               "(`tests/test_tutorials.py`), so the code above works as shown.*")
    return "\n\n".join(out) + "\n"


def tutorials() -> dict[str, str]:
    return {f"tutorials/{p.stem}.md": tutorial_page(p) for p in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))}


# -- the top-level names -----------------------------------------------------------------------------------------
def api_index() -> str:
    lines = ["# `import spikeforge as sf`", "",
             "Every name below is importable from `spikeforge` itself (loaded on first use, so `import spikeforge` "
             "stays light). Generated from `spikeforge.__all__`; the other pages of this reference document each "
             "module.", "", "| name | defined in | what it is |", "|---|---|---|"]
    for name in spikeforge.__all__:
        module = spikeforge._API[name]
        obj = getattr(spikeforge, name)
        if isinstance(obj, Registry):
            doc = f"registry of {obj.kind}s: " + ", ".join(f"`{n}`" for n in obj.names())
        else:
            doc = (inspect.getdoc(obj) or "").strip().split("\n\n")[0].replace("\n", " ")
            doc = rst_to_markdown(doc).rstrip(":").replace("|", "\\|")
        lines.append(f"| `sf.{name}` | `{module}` | {doc} |")
    return "\n".join(lines) + "\n"


# -- mkdocs event ------------------------------------------------------------------------------------------------
def generated_pages() -> dict[str, str]:
    pages = {"reference/recipes.md": recipe_reference(), "reference/cli.md": cli_reference(), "api/index.md": api_index(),
             **tutorials()}
    changelog = ROOT / "CHANGELOG.md"
    if changelog.is_file():
        pages["changelog.md"] = changelog.read_text()
    return pages


def on_files(files, config):
    for uri, content in generated_pages().items():
        files.append(File.generated(config, uri, content=content))
    return files
