"""``make bench``: the gateway's throughput and latency next to native Envoy authorization.

Run as ``python -m bench`` (see ``bench.__main__``); scenarios are listed in
``bench.scenarios``, the open-loop latency method is explained in ``bench.openloop``.
"""
