"""Runs INSIDE the pinned Wallaroo SDK's venv (scripts/wallaroo-sdk): the SDK's OpenAI flow against
the runtime: upload an LLM model, configure(openai_config=OpenaiConfig(enabled=True, ...)), deploy it,
then Pipeline.openai_chat_completion / openai_completion (the SDK's own openai client on
{pipeline url}/openai/v1), streamed too. Prints one JSON object with what each step returned.

usage: python openai_flow.py URL TOKEN WORKDIR MODEL_ZIP OPENAI_BASE_URL OPENAI_API_KEY
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa

url, token, workdir, model_zip, openai_url, openai_key = sys.argv[1:7]
credentials = Path(workdir) / "credentials.json"  # the token auth of wallaroo/auth.py
credentials.write_text(json.dumps({"token": token, "user_email": "sdk@example.com", "user_id": "sdk-user"}))
os.environ["WALLAROO_SDK_CREDENTIALS"] = str(credentials)

import wallaroo  # noqa: E402 - reads its credentials path at Client() time
from wallaroo.deployment_config import DeploymentConfigBuilder  # noqa: E402
from wallaroo.framework import Framework  # noqa: E402
from wallaroo.openai_config import OpenaiConfig  # noqa: E402

TEXT_IN = pa.schema([("text", pa.string())])
TEXT_OUT = pa.schema([("generated_text", pa.string()), ("prompt_tokens", pa.int64()),
                      ("completion_tokens", pa.int64()), ("error", pa.string())])
out: dict = {}

wl = wallaroo.Client(api_endpoint=url, auth_type="token")
model = wl.upload_model("sdk-openai-llm", model_zip, framework=Framework.CUSTOM, input_schema=TEXT_IN, output_schema=TEXT_OUT)
model = model.configure(openai_config=OpenaiConfig(enabled=True, chat_completion_config={"max_tokens": 32}))
out["config"] = model.config().openai_config().model_dump()

pipeline = wl.build_pipeline("sdk-openai")
pipeline.add_model_step(model)
config = (DeploymentConfigBuilder().sidekick_env(model, {"OPENAI_BASE_URL": openai_url, "OPENAI_API_KEY": openai_key,
                                                         "OPENAI_MODEL": "gpt-4o-mini"}).build())
pipeline.deploy(deployment_config=config)

chat = pipeline.openai_chat_completion(messages=[{"role": "user", "content": "hello from the sdk"}])
out["chat"] = {"content": chat.choices[0].message.content, "finish_reason": chat.choices[0].finish_reason,
               "completion_tokens": chat.usage.completion_tokens}
stream = pipeline.openai_chat_completion(messages=[{"role": "user", "content": "stream it"}], stream=True,
                                         stream_options={"include_usage": True})
chunks = list(stream)
out["stream"] = {"text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                 "chunks": len(chunks), "usage": chunks[-1].usage.completion_tokens if chunks[-1].usage else None}
done = pipeline.openai_completion(prompt="complete this")
out["completion"] = {"text": done.choices[0].text, "object": done.object}
pipeline.undeploy()
print(json.dumps(out))
