"""What a step's pod says about itself, in words for the status rows: why it does not serve,
how its container last ended, whether it is Ready."""

from __future__ import annotations

from lightkube.resources.core_v1 import Pod

#: A pod in these phases never runs again (evicted, or its containers exited for good): no replica.
ENDED = ("Succeeded", "Failed")


def pod_problem(pod: Pod) -> str | None:
    """Why a pod is not serving, as Kubernetes says it (the scheduler's reason first)."""
    status = pod.status
    if status is None:
        return None
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return f"pod {pod.metadata.name} Pending: {cond.reason}: {cond.message}"
    for cs in status.containerStatuses or []:
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason:
            return f"pod {pod.metadata.name}: {waiting.reason}: {waiting.message or ''}".rstrip(": ")
    if status.phase in ENDED or status.phase == "Unknown":
        reason, message = status.reason or "", status.message or ""
        for cond in status.conditions or []:  # why the kubelet ended it (an eviction, a node shutdown)
            if cond.type == "DisruptionTarget" and cond.status == "True":
                reason, message = reason or cond.reason or "", message or cond.message or ""
        return f"pod {pod.metadata.name} {status.phase}: {reason} {message}".strip()
    return None


def pod_exit(pod: Pod, memory: str | None = None) -> str | None:
    """How the pod's container last ended, when it did not end well, as the kubelet reports it (the
    kernel's OOM kill included, which the link alone sees as a lost connection)."""
    for cs in (pod.status.containerStatuses or []) if pod.status is not None else []:
        ended = (cs.state.terminated if cs.state is not None else None) or (
            cs.lastState.terminated if cs.lastState is not None else None)
        if ended is None or ended.reason == "Completed":
            continue
        text = (f"pod {pod.metadata.name}: its container ended {ended.reason or 'with an error'} "
                f"(exit code {ended.exitCode}; restarts: {cs.restartCount})")
        if ended.reason == "OOMKilled":
            text += (f": the kernel killed it at its memory limit{f' of {memory}' if memory else ''}; "
                     "raise the step's sidekick memory")
        return text
    return None


def pod_ended(pod: Pod, scratch_size: str | None) -> str:
    """Why a pod ended for good. A sidekick never exits by itself, so a pod that ended without a
    reason was stopped by its node: kubelet 1.37 records an eviction (e.g. a scratch emptyDir
    over its sizeLimit) as an Event, which the runtime may not read, and leaves the pod Succeeded."""
    problem = pod_problem(pod)
    if problem and not problem.endswith(f"{pod.status.phase}:"):
        return problem
    return (f"pod {pod.metadata.name} {pod.status.phase}: stopped by its node (an eviction: its scratch over "
            f"scratch_size {scratch_size or '(the default)'}, or the node short of disk or memory; the pod's "
            "events say which)")


def pod_ready(pod: Pod) -> bool:
    status = pod.status
    return bool(status is not None and status.phase == "Running" and status.podIP and any(
        c.type == "Ready" and c.status == "True" for c in status.conditions or []))
