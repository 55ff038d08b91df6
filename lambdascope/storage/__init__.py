"""Storage plumbing shared by the services: SQL engines and the object store."""
