"""Shared core: config loading, atomic writes, data formats, MLflow logging, model helpers.

Imports run one way: pipelines -> stages -> core. Nothing here imports stages or pipelines.
"""
