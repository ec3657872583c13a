"""Evaluation: metrics, model comparison, reports and plots."""
