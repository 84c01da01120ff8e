"""Dify: the ONE model of a Dify compose project (files, env layers, services, images, install record)."""
