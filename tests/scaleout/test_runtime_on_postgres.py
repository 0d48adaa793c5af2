"""The runtime tests that matter, run unchanged against PostgreSQL (the same functions as in
tests/runtime, collected here with this folder's fixtures: runtimes started with --database)."""

from tests.runtime.conftest import client, double_pipeline, models_dir  # noqa: F401 - fixtures
from tests.runtime.test_inference import (  # noqa: F401
    test_deploy_status_and_redacted_config,
    test_get_logs_pages_formats_and_time_range,
    test_json_inference_with_the_docs_headers,
)
from tests.runtime.test_models import (  # noqa: F401
    test_oversized_upload_is_413_naming_the_limit_and_leaves_nothing,
    test_upload_version_and_dedupe,
    test_workspaces,
)
from tests.runtime.test_pipelines import test_versions_undeploy_redeploy_delete  # noqa: F401
from tests.runtime.test_restart import test_kill9_restart_loses_nothing  # noqa: F401
from tests.runtime.test_retention import test_runtime_prunes_logged_inferences_past_retention  # noqa: F401
