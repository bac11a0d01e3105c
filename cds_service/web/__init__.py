"""Operational HTTP: CORS, health, readiness, metrics, the rule table, the OpenAPI document."""
