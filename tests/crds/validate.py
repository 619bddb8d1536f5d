"""Validate Kubernetes manifests strictly: built-in kinds with kubernetes-validate, operator kinds
against their CRDs' schemas (the JSON files here), rejecting unknown fields as an API server's
Strict field validation does.

Run with the tools' Python (``.venv-tools``: kubernetes-validate brings jsonschema):
``python tests/crds/validate.py FILE...``. Prints one ``ok <kind> <name>`` per document, and each
error; exits 1 on any error or on a document whose kind has no schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
KUBERNETES = "1.37.0"


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD lists an object's fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


def custom_schemas() -> dict[tuple[str, str], Any]:
    found = {}
    for path in sorted(HERE.glob("*.json")):
        crd = json.loads(path.read_text())
        schema = strict(crd["schema"])
        schema["properties"]["metadata"] = {"type": "object"}  # the API server checks metadata itself
        found[(crd["apiVersion"], crd["kind"])] = schema
    return found


def main(files: list[str]) -> int:
    schemas = custom_schemas()
    failed = False
    for name in files:
        for doc in yaml.safe_load_all(Path(name).read_text()):
            if not doc:
                continue
            what = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')} ({name})"
            custom = schemas.get((doc.get("apiVersion"), doc.get("kind")))
            try:
                if custom is not None:
                    jsonschema.Draft7Validator(custom).validate(doc)
                else:
                    kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
                failed = True
                print(f"error {what}: {exc.message} at {'.'.join(map(str, exc.absolute_path))}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                failed = True
                print(f"error {what}: no schema ({exc.message})")
            else:
                print(f"ok {doc['kind']} {doc['metadata']['name']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
