"""Per-event features: the Featurizer (vocabularies, buckets, time), the small-batch path, habit profiles."""
