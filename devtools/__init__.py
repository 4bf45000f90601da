"""Tools for developing and testing the gateway; never imported by the gateway itself."""
