"""`KubePlacementSettings`: how a runtime places model steps as pods (`--sidekick-placement
kubernetes`), and `KubeScale`: one step's replica bounds; no Kubernetes client is imported here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wallaroo_pulumi.runtime.sidekick.autoscale import ScalePolicy


class KubePlacementSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1, description="the image of sidekick pods (the runtime image)")
    namespace: str | None = Field(default=None, description="where the step objects go; default: this pod's namespace")
    owner: str | None = Field(default=None, description="'Deployment/<name>' or 'ServiceAccount/<name>' owning every "
                                                        "step Deployment (the runtime's), so deleting it deletes them")
    runtime_name: str = Field(default="wallaroo", description="this runtime's label value on its objects")
    kubeconfig: Path | None = Field(default=None, description="outside a cluster: the kubeconfig to use")
    idle_s: float = Field(default=300.0, gt=0, description="a step with autoscale_min 0 scales to zero after this "
                                                            "long without requests")
    request_timeout_s: float = Field(default=300.0, gt=0, description="one batch's longest wait for its pod")
    task_image: str | None = Field(default=None, description="the image of task pods, a Python with the wallaroo "
                                                              "SDK; default: the sidekick image")
    task_url: str | None = Field(default=None, description="where task pods reach this runtime (its Service's URL); "
                                                           "default: the address the runtime listens on")

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        kinds = ("Deployment", "ServiceAccount")
        if value is not None and (value.count("/") != 1 or value.split("/")[0] not in kinds or not value.split("/")[1]):
            raise ValueError(f"kube owner: expected Deployment/NAME or ServiceAccount/NAME, got {value!r}")
        return value


@dataclass(frozen=True)
class KubeScale:
    """A step's replica bounds; ``minimum`` 0 lets it scale to zero when idle. With ``queue_up`` it
    scales on its queue depth (D46), else on busy time."""

    minimum: int
    maximum: int
    target: float
    queue_up: int | None = None
    queue_down: int = 1
    window_s: float = 300.0

    def policy(self) -> ScalePolicy:
        return ScalePolicy(minimum=max(1, self.minimum), maximum=max(1, self.minimum, self.maximum), target=self.target,
                           queue_up=self.queue_up, queue_down=self.queue_down, window_s=self.window_s)
