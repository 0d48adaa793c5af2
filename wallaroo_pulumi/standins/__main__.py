"""Run a stand-in cloud server in the foreground (for examples, manual checks, benchmarks).

Prints one JSON line with the URLs and sidekick-env values to use, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from wallaroo_pulumi.standins.azure_server import DEFAULT_AZURE_OPENAI_KEY, DEFAULT_AZUREML_KEY, AzureStandin
from wallaroo_pulumi.standins.openai_server import DEFAULT_API_KEY, DEFAULT_MODEL, OpenAIStandin
from wallaroo_pulumi.standins.vertex_server import VertexStandin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wallaroo_pulumi.standins", description=__doc__.split("\n\n")[0])
    parser.add_argument("cloud", choices=("openai", "vertex", "azure"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every protocol request")
    parser.add_argument("--token-interval", type=float, default=0.0,
                        help="seconds between the events of a streamed answer (a model generating)")
    parser.add_argument("--api-key", default=None, help="openai: the accepted API key")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="openai: the served model name")
    parser.add_argument("--service-account-out", default=None, help="vertex: write a generated service-account key here")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="vertex: access-token expires_in seconds")
    args = parser.parse_args(argv)

    info: dict[str, object]
    if args.cloud == "openai":
        key = args.api_key or DEFAULT_API_KEY
        server = OpenAIStandin(api_keys=[key], models=[args.model], host=args.host, port=args.port).start()
        info = {"OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": key, "OPENAI_MODEL": args.model}
    elif args.cloud == "vertex":
        server = VertexStandin(token_lifetime_s=args.token_lifetime, host=args.host, port=args.port).start()
        sa = server.create_service_account()
        if args.service_account_out:
            with open(args.service_account_out, "w", encoding="utf-8") as fh:
                json.dump(sa, fh, indent=2)
        info = {
            "VERTEX_ENDPOINT_URL": server.endpoint_url,
            # APPLICATION_CREDENTIALS takes the file's *content*
            "service_account_file": args.service_account_out or "(pass --service-account-out FILE to save the key)",
            "token_uri": server.token_uri,
        }
    else:
        server = AzureStandin(host=args.host, port=args.port).start()
        info = {
            "AZURE_OPENAI_ENDPOINT": server.azure_openai_endpoint,
            "AZURE_OPENAI_DEPLOYMENT": next(iter(server.deployments)),
            "AZURE_OPENAI_API_KEY": DEFAULT_AZURE_OPENAI_KEY,
            "AZUREML_SCORE_URL": server.score_url,
            "AZUREML_API_KEY": DEFAULT_AZUREML_KEY,
        }
    server.faults.set_latency(args.latency)
    server.faults.set_token_interval(args.token_interval)
    print(json.dumps({"base_url": server.base_url, "control": f"{server.base_url}/_standin", "env": info}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
