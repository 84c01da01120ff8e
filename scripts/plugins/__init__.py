"""Plugins: .difypkg repackaging for offline daemons, and plugin signatures."""
