"""The ext_authz server: Envoy asks it about every request to a protected route."""
