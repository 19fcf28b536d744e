"""Output channels: where answers go (back through the connector, another connector, a webhook, ...)."""
