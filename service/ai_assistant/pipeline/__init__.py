"""The worker side: claim a queued message, turn it into an answer, hand the answer to an output channel."""
