"""Inference engines: anything that turns a conversation into an answer."""
