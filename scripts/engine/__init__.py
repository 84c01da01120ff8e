"""Engine: the docker/podman adapter (commands, compose providers, images, bridge fixes). Uses core."""
