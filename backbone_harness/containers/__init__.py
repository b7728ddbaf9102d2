"""Containers on a real engine (podman): the engine, the project's images, compose stacks."""
