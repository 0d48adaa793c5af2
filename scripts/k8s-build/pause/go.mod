// The pod sandbox's "pause" program for the real node of the Kubernetes tests: it holds a pod's
// namespaces and does nothing else (no registry here to pull registry.k8s.io/pause from).
module wallaroo-pulumi/tools/pause

go 1.26.6
