"""What the three sides of the project must agree on, in one place none of them owns.

``model_tools`` writes exports, the gateway reads them and serves them, and the Pulumi
program (``infra``) starts the gateway's pods next to TF Serving's. Each side imports the
names it shares with the others from here, and this package imports nothing but the
standard library, so the TensorFlow-based export tooling, the Flask gateway and the Pulumi program
can all depend on it without depending on each other:

- ``model``: the SavedModel's signature, tensor and preprocessing names;
- ``api_keys``: what a key and a key id may be, and the key file's lines;
- ``ports``: the ports the containers listen on;
- ``gateway_env``: the gateway's environment variables, their defaults, and the memory a
  gateway worker needs for them;
- ``metrics``: the gateway's metric names that the Pulumi program's autoscaling reads.
"""
