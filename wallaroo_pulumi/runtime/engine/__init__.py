"""The engine: each deployed pipeline as sidekick pools placed locally or on Kubernetes, and the
model files it unpacks for them."""
