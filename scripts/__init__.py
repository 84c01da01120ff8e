"""dify-airgap: move a Dify release into a closed network and run it on Docker or Podman."""

__version__ = "0.1.0"
