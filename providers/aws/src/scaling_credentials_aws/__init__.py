"""scaling-credentials-aws."""
