"""arq: Attentive Reasoning Queries."""
