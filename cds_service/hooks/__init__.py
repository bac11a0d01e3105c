"""CDS Hooks HTTP: discovery, services, feedback, prefetch, auth."""
