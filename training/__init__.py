"""seqcohort package."""
