"""scaling-credentials-vault."""
