"""Runs INSIDE the pinned Wallaroo SDK's venv: one BYOP upload through the generated client, which
sends the `file` part before `metadata`. Prints the status and the type `parsed` came back as.

usage: python upload.py URL TOKEN MODEL_ZIP WORKSPACE_ID NAME
"""

from __future__ import annotations

import base64
import json
import sys

import pyarrow as pa
from wallaroo.wallaroo_ml_ops_api_client.api.model import models_upload_and_convert
from wallaroo.wallaroo_ml_ops_api_client.client import AuthenticatedClient
from wallaroo.wallaroo_ml_ops_api_client.models import Conversion, Framework, PythonVersion, UploadPayloadDoc, UploadRequest
from wallaroo.wallaroo_ml_ops_api_client.types import File

url, token, model_zip, workspace_id, name = sys.argv[1:6]
client = AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=False)


def schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(bytes(schema.serialize())).decode()


with open(model_zip, "rb") as f:
    metadata = UploadRequest(
        conversion=Conversion(framework=Framework.CUSTOM, requirements=[], python_version=PythonVersion.VALUE_1),
        name=name, visibility="private", workspace_id=int(workspace_id),
        input_schema=schema_b64(pa.schema([("x", pa.float64())])), output_schema=schema_b64(pa.schema([("y", pa.float64())])),
    )
    body = UploadPayloadDoc(file=File(payload=f, file_name="echo.zip"), metadata=metadata)
    response = models_upload_and_convert.sync_detailed(client=client, body=body)
parsed = response.parsed
print(json.dumps({"status": int(response.status_code), "parsed": None if parsed is None else type(parsed).__name__,
                  "body": response.content.decode(errors="replace")[:500]}), flush=True)
