"""Ray Serve: the FastAPI ingress, the encoder and assigner deployments, and the version-following state they hold."""
