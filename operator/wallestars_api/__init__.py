"""What the operator and the webhook service share: API names, lifecycle and retry policy."""
