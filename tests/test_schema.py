"""``spikeforge schema``: the recipe JSON Schema lists every stage kind with its bounds, and every shipped recipe
validates against it (with the ``jsonschema`` package, when installed)."""

import argparse
import json
from pathlib import Path

import pytest
import yaml

from spikeforge.app.commands import schema as schema_cmd
from spikeforge.engine.recipe import recipe_schema
from spikeforge.engine.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def _write_schema(tmp_path) -> dict:
    parser = argparse.ArgumentParser()
    schema_cmd.add_parser(parser.add_subparsers())
    out = tmp_path / "recipe.schema.json"
    args = parser.parse_args(["schema", "--out", str(out)])
    assert args.func(args) == 0
    return json.loads(out.read_text())  # valid JSON


def _stage_defs(schema: dict) -> dict[str, dict]:
    """Each stage kind's definition, by kind."""
    items = schema["properties"]["stages"]["items"]
    out = {}
    for ref in items.get("oneOf", items.get("anyOf", [])):
        d = schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]
        out[d["properties"]["kind"]["const"]] = d
    return out


def test_schema_lists_every_stage_kind_with_bounds(tmp_path):
    schema = _write_schema(tmp_path)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["required"]) == {"data", "model", "stages"}
    assert schema["additionalProperties"] is False
    kinds = _stage_defs(schema)
    assert set(kinds) == set(STAGES.names()) >= {"ann", "convert", "snn", "iir", "bntt", "attack", "stdp"}
    ann = kinds["ann"]["properties"]
    assert ann["lr"]["exclusiveMinimum"] == 0
    assert ann["epochs"]["minimum"] == 1
    assert ann["label_smoothing"]["maximum" if "maximum" in ann["label_smoothing"] else "exclusiveMaximum"] == 1
    assert ann["milestones"]["items"]["exclusiveMinimum"] == 0 and ann["milestones"]["items"]["maximum"] == 1
    assert set(ann["optimizer"]["enum"]) == {"sgd", "adam"}
    conv = kinds["convert"]["properties"]
    assert conv["percentile"]["exclusiveMinimum"] == 0 and conv["percentile"]["maximum"] == 100
    assert "leak" in conv["snn"]["properties"]  # SNNConfig keys, for completion
    assert "t_present" in kinds["stdp"]["properties"]["net"]["properties"]
    assert kinds["ann"]["additionalProperties"] is False
    model = schema["properties"]["model"]
    model = schema["$defs"][model["$ref"].rsplit("/", 1)[1]] if "$ref" in model else model
    assert model["required"] == ["arch"]


def test_schema_is_printed_without_out(capsys):
    args = argparse.Namespace(out=None)
    assert schema_cmd.cmd_schema(args) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(recipe_schema()))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate_against_the_schema(path):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(path.read_text()), recipe_schema())


def test_schema_rejects_what_the_loader_rejects():
    jsonschema = pytest.importorskip("jsonschema")
    raw = yaml.safe_load((REPO / "recipes" / "mnist-quickstart.yaml").read_text())
    schema = recipe_schema()
    for bad in ({"kind": "ann", "lr": 0}, {"kind": "ann", "epoch": 1}, {"kind": "teleport"},
                {"kind": "iir", "timesteps": [2, 1], "max_batches": [0, 3]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**raw, "stages": [bad]}, schema)
