"""Generation, classifiers, metrics and attacks for edited models."""
