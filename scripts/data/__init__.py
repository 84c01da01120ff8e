"""Data: the data of a running stack (databases, volumes): backups and daemon snapshots."""
