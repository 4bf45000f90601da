"""Deployment manifests, and the generator that keeps their Envoy bootstrap current."""
