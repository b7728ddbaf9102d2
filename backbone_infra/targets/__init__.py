"""Target backends: how a stack's workloads run on Docker, Kubernetes or locally."""
