"""Pulumi program for the ai-assistant deployment (see docs/infra.md)."""
