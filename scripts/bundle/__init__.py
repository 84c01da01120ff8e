"""Bundle: build, archive, manifest and verification of what crosses the air gap; Dify sources."""
