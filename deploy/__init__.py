"""Running the router: the embedded broker, topics, local model tiers, the stack and the CLI."""
