"""A soak run: mixed, verified traffic through the whole gateway for a set time.

``python -m soak --duration 600`` (or ``make soak``) starts Redis, the echo backend, two dev
IdPs with short-lived rotating tokens, two ext_authz workers, the login app and Envoy with the
test-support machinery, lets a few client threads drive every kind of request whose outcome is
known in advance, and then reports unexpected outcomes, memory growth of each component,
Redis keys against live sessions and the IdPs' refresh counts.

``environment`` starts the processes, ``pool`` holds the sessions the clients share,
``traffic`` and ``checks`` are the clients and what they verify, ``recorder`` counts,
``probes`` measures memory and Redis, ``verdict`` decides pass or fail, ``runner`` ties it
together and ``report`` prints and writes the result.
"""
