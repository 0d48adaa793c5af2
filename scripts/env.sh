# shellcheck shell=bash
# One environment for the Makefile, tests and examples: our venv and Pulumi CLI
# first on PATH, and Pulumi kept fully offline (local file backend inside the
# repo's ignored .state/, no Pulumi Cloud, no update checks, no plugin downloads).
# Source it: `. scripts/env.sh`.
WALLAROO_REPO="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export WALLAROO_REPO
export PATH="$WALLAROO_REPO/.tools/bin:$WALLAROO_REPO/.venv/bin:$PATH"
export PULUMI_HOME="${PULUMI_HOME:-$WALLAROO_REPO/.state/pulumi-home}"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$WALLAROO_REPO/.state/backend}"
# Local stacks encrypt their secrets with this passphrase. Override it for real stacks.
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-wallaroo-local-dev}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_SKIP_CONFIRMATIONS=true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING=true
export PULUMI_PYTHON_CMD="${PULUMI_PYTHON_CMD:-$WALLAROO_REPO/.venv/bin/python}"
unset PULUMI_ACCESS_TOKEN
mkdir -p "$PULUMI_HOME" "${PULUMI_BACKEND_URL#file://}"
