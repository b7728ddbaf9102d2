"""Pulumi ComponentResources, one per service of a backbone stack."""
