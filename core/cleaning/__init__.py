"""Corpus and record cleaning for the clean stage (stages/clean.py): datatrove steps, the fast filter blocks, the
executor runner, guards, and the in-memory cleaning of instructions and preferences (docs/cleaning.md)."""
