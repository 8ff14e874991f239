"""The CRD (crds/) and the pydantic models agree: field names, defaults, bounds; examples are
valid; the schema is structural and documented (kubectl explain)."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from eio_operator.models import (
    RESERVED_ENV,
    EmbeddingImportSpec,
    EmbeddingImportStatus,
    parse_spec,
)
from operator_testlib import ROOT, apply_defaults, crd_schema, load_crd, spec_dict, validate
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from eio_common import contract

SCHEMA = crd_schema()
SPEC_SCHEMA = SCHEMA["properties"]["spec"]
STATUS_SCHEMA = SCHEMA["properties"]["status"]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out.extend(_models_in(arg))
    return out


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return False


def _walk(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    """Differences between a model's fields and the schema's properties, recursively."""
    problems = []
    props = schema.get("properties", {})
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    for name in sorted(set(fields) - set(props)):
        problems.append(f"{path}.{name}: in the model, not in the CRD")
    for name in sorted(set(props) - set(fields)):
        problems.append(f"{path}.{name}: in the CRD, not in the model")
    for name in sorted(set(fields) & set(props)):
        field, sub = fields[name], props[name]
        problems.extend(_compare_field(field, sub, f"{path}.{name}"))
        models = _models_in(field.annotation)
        if models:
            target = sub["items"] if _is_list(field.annotation) else sub
            problems.extend(_walk(models[0], target, f"{path}.{name}"))
    return problems


def _bounds(field: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    metas = list(field.metadata)
    for arg in typing.get_args(field.annotation):
        metas.extend(getattr(arg, "__metadata__", ()))
        for inner in typing.get_args(arg):
            metas.extend(getattr(inner, "__metadata__", ()))
    for m in metas:
        if isinstance(m, annotated_types.Ge):
            out["minimum"] = m.ge
        elif isinstance(m, annotated_types.Le):
            out["maximum"] = m.le
        elif isinstance(m, annotated_types.MinLen) and not _is_list(field.annotation):
            out["minLength"] = m.min_length
        elif isinstance(m, annotated_types.MaxLen) and not _is_list(field.annotation):
            out["maxLength"] = m.max_length
        elif getattr(m, "min_length", None) is not None and not _is_list(field.annotation):
            out["minLength"] = m.min_length
        if getattr(m, "max_length", None) is not None and not _is_list(field.annotation):
            out["maxLength"] = m.max_length
    return out


def _compare_field(field: FieldInfo, sub: dict[str, Any], path: str) -> list[str]:
    problems = []
    for key, value in _bounds(field).items():
        if sub.get(key) != value:
            problems.append(f"{path}: {key} is {value} in the model, {sub.get(key)} in the CRD")
    if "default" in sub and not _models_in(field.annotation):
        default = field.get_default(call_default_factory=True)
        if default != sub["default"]:
            problems.append(f"{path}: default {default!r} in the model, {sub['default']!r} in CRD")
    return problems


def test_spec_model_and_crd_agree() -> None:
    assert _walk(EmbeddingImportSpec, SPEC_SCHEMA, "spec") == []


def test_status_model_and_crd_agree() -> None:
    assert _walk(EmbeddingImportStatus, STATUS_SCHEMA, "status") == []


def test_required_fields_agree() -> None:
    required_in_model = sorted(
        (f.alias or n) for n, f in EmbeddingImportSpec.model_fields.items() if f.is_required()
    )
    assert required_in_model == sorted(SPEC_SCHEMA["required"])
    limits = SPEC_SCHEMA["properties"]["importer"]["properties"]["resources"]["properties"]
    assert limits["limits"]["required"] == ["memory"]


def test_names() -> None:
    crd = load_crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{contract.PLURAL}.{contract.API_GROUP}"
    assert crd["spec"]["group"] == contract.API_GROUP
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        contract.KIND,
        contract.PLURAL,
        ["ei"],
        ["embeddings"],
    )
    version = crd["spec"]["versions"][0]
    assert version["name"] == contract.API_VERSION
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    cols = {c["name"]: c for c in load_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    want = ["Phase", "Progress", "Lag", "Restarts", "OOMs", "Last-Sync", "Verified", "Active"]
    want.append("Age")
    assert list(cols) == want
    assert cols["Verified"]["jsonPath"] == '.status.conditions[?(@.type=="Verified")].status'
    assert cols["Phase"]["jsonPath"] == ".status.phase"
    assert cols["Progress"]["jsonPath"] == ".status.progress"
    assert cols["Lag"]["jsonPath"] == ".status.lag.files"
    assert cols["Restarts"]["jsonPath"] == ".status.restarts.total"
    assert cols["OOMs"]["jsonPath"] == ".status.restarts.oomKilled"
    assert (cols["Last-Sync"]["jsonPath"], cols["Last-Sync"]["type"]) == (
        ".status.lastSyncTime",
        "date",
    )


def test_phase_enum_matches_the_model() -> None:
    from eio_operator.models import ImportPhase

    assert STATUS_SCHEMA["properties"]["phase"]["enum"] == [p.value for p in ImportPhase]


def test_continuous_status_example_is_valid() -> None:
    from eio_operator.decision import decide
    from eio_operator.models import ShardStatus
    from eio_operator.status import summarize
    from operator_testlib import NAME, NOW, checkpoint, make_spec, pod

    spec = make_spec(mode="Continuous")
    cp = checkpoint(points=40, follow=True, lag_files=2, lag_bytes=10, oldest_ago=5, synced_ago=60)
    d = decide(
        spec,
        0,
        (pod(1, exit_code=0),),
        cp,
        ShardStatus(index=0, attempt=1, pod_uid="u"),
        NOW,
        3,
        import_name=NAME,
    )
    status = summarize(
        spec=spec,
        generation=3,
        previous=EmbeddingImportStatus(),
        decisions=[d],
        checkpoints={0: cp},
        now=NOW,
        checkpoint_problems={0: "unreadable"},
    )
    wire = status.to_wire()
    assert validate(wire, STATUS_SCHEMA, "status") == []
    assert (wire["lag"]["files"], wire["restarts"]["exited"]) == (2, 1)
    assert wire["phase"] == "CatchingUp"
    assert "lastSyncTime" in wire


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out.extend(_nodes(sub, f"{path}.{name}"))
    if "items" in schema:
        out.extend(_nodes(schema["items"], f"{path}[]"))
    return out


def test_structural_and_documented() -> None:
    for path, node in _nodes(SCHEMA):
        if path in ("", ".metadata"):
            continue
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        if node.get("type") == "object" and path not in ("", ".metadata"):
            assert "properties" in node, f"{path}: objects have a schema (no free-form status)"
        if not path.endswith("[]") or node.get("type") == "object":
            assert node.get("description") or path.endswith("[]"), f"{path}: no description"


def test_quantities_are_int_or_string_with_pattern() -> None:
    res = SPEC_SCHEMA["properties"]["importer"]["properties"]["resources"]["properties"]
    policy = SPEC_SCHEMA["properties"]["memoryPolicy"]["properties"]
    for node in (
        res["limits"]["properties"]["memory"],
        res["requests"]["properties"]["memory"],
        policy["threshold"],
        policy["maxMemoryLimit"],
    ):
        assert node["x-kubernetes-int-or-string"] is True
        assert node["pattern"]


def test_reserved_env_list_matches_cel_rule() -> None:
    env = SPEC_SCHEMA["properties"]["importer"]["properties"]["env"]
    rule = env["x-kubernetes-validations"][0]["rule"]
    assert {name for name in RESERVED_ENV if f"'{name}'" in rule} == set(RESERVED_ENV)


def test_cel_rules_have_messages() -> None:
    for path, node in _nodes(SCHEMA):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{path}: CEL rule without a message"


def test_full_example_is_valid_and_round_trips() -> None:
    body = spec_dict(
        **{
            "chunking": {"size": 512, "overlap": 64},
            "importer.env": [{"name": "MALLOC_ARENA_MAX", "value": "2"}],
            "importer.resources.requests": {"memory": "512Mi", "cpu": "500m"},
            "parallelism": {"shards": 2},
        }
    )
    assert validate(body, SPEC_SCHEMA, "spec") == []
    defaulted = apply_defaults(body, SPEC_SCHEMA)
    model = parse_spec(defaulted, "imp")
    # What the operator would write back (by alias) is again valid against the CRD.
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert validate(dumped, SPEC_SCHEMA, "spec") == []
    # Defaults: the API server's defaulting and the model's agree.
    assert parse_spec(apply_defaults(dumped, SPEC_SCHEMA), "imp") == model
    assert model == parse_spec(body, "imp")


def test_minimal_spec_defaults_agree() -> None:
    minimal = {
        "sources": {"configMap": {"name": "texts"}},
        "qdrant": {"url": "http://qdrant:6333", "collection": "c"},
        "importer": {"resources": {"limits": {"memory": "1Gi"}}},
    }
    assert validate(minimal, SPEC_SCHEMA) == []
    assert parse_spec(apply_defaults(minimal, SPEC_SCHEMA)) == parse_spec(minimal)


def test_status_example_is_valid() -> None:
    from eio_operator.decision import decide
    from eio_operator.status import summarize
    from operator_testlib import NAME, NOW, checkpoint, make_spec, pod

    spec = make_spec()
    cp = checkpoint(points=40)
    from eio_operator.models import ShardStatus

    d = decide(
        spec,
        0,
        (pod(1, exit_code=137, reason="OOMKilled"),),
        cp,
        ShardStatus(index=0, attempt=1, pod_uid="u"),
        NOW,
        3,
        import_name=NAME,
    )
    status = summarize(
        spec=spec,
        generation=3,
        previous=EmbeddingImportStatus(),
        decisions=[d],
        checkpoints={0: cp},
        now=NOW,
    )
    assert validate(status.to_wire(), STATUS_SCHEMA, "status") == []


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != contract.KIND:
            continue
        assert doc["apiVersion"] == f"{contract.API_GROUP}/{contract.API_VERSION}"
        assert validate(doc["spec"], SPEC_SCHEMA, "spec") == []
        parse_spec(apply_defaults(doc["spec"], SPEC_SCHEMA), doc["metadata"]["name"])
