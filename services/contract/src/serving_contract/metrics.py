"""The gateway's counter of images asked to be classified, by name.

The gateway increments it; infra's autoscaler (KEDA) reads it from Prometheus as TF
Serving's load and as the signal that wakes a sleeping TF Serving, so the name has one
home.
"""

IMAGES_COUNTER = "gateway_images"  # prometheus_client exposes it as gateway_images_total
