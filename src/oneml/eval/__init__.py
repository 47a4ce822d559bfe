"""Evaluation of trained runs: downstream benchmarks (GSM8K, IFBench prompts, TruthfulQA, lm-eval tasks),
perplexity, end-of-sequence behaviour and inference cost, recorded with the run (`oneml eval`)."""
