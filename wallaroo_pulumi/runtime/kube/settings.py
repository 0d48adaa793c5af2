"""`KubePlacementSettings`: how a runtime places model steps as pods (`--sidekick-placement
kubernetes`); no Kubernetes client is imported here."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
