"""Evaluation: held-out perplexity and token accuracy (more benchmarks come with the evaluation issue)."""
