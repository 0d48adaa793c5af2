"""Edge mode: a published pipeline imported and served offline, its logs shipped to the centre."""

from wallaroo_pulumi.runtime.services.edge.agent import EdgeAgent, EdgeJoinRefused
from wallaroo_pulumi.runtime.services.edge.importer import import_publish

__all__ = ["EdgeAgent", "EdgeJoinRefused", "import_publish"]
