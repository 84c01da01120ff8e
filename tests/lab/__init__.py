"""The lab: engines, stand-in images, Docker-in-Docker e2e flow and bench. Test-only; never shipped."""
