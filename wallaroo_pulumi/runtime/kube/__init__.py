"""Model steps as pods: the runtime as a Kubernetes controller of its sidekicks (D35).

`KubernetesPlacement` (placement.py) gives the engine a `KubeStepPool` (pool.py) per step: a
Deployment of sidekick pods with a Secret and a ServiceAccount of its own (objects.py), reached
over the sidekick link; client.py sets up the API client (in-cluster or a kubeconfig)."""
