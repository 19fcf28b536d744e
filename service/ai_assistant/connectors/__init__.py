"""IM connectors: one module per platform. Each verifies inbound requests and sends outbound text; nothing else."""
