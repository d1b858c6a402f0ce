"""From embeddings to cohorts: FAISS index, spherical k-means, confidence, short-history head, tiers, profiles."""
