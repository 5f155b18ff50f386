"""The ports the containers listen on, for every place that starts or reaches them.

Python imports these; what cannot import (the Dockerfiles, nginx.conf, docker-compose.yaml,
the docs) is checked against them by ``tests/test_one_source.py``.
"""

from __future__ import annotations

# TF Serving's defaults (its --port and --rest_api_port).
GRPC_PORT = 8500
REST_PORT = 8501
# The gateway as clients reach it: the proxy in front of gunicorn, in compose and in a pod.
GATEWAY_PORT = 9696
# gunicorn behind the proxy, on the loopback of the pod or the compose network namespace.
GUNICORN_PORT = 8000
# The proxy's answer to plain HTTP when TLS ends at the load balancer (308 to https).
REDIRECT_PORT = 9697
# The proxy's /metrics (every gunicorn worker's), for Prometheus only.
METRICS_PORT = 9090
