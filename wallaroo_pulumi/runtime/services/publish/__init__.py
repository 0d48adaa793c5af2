"""Publishing: a pipeline version as an OCI image, its edges, and the logs they ship home."""

from wallaroo_pulumi.runtime.services.publish.links import EdgeLinks
from wallaroo_pulumi.runtime.services.publish.service import Publishes, PublishTarget

__all__ = ["EdgeLinks", "PublishTarget", "Publishes"]
