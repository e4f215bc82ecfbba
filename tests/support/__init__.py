"""Helpers shared by the tests: data builders, tiny models, schema loaders. No tests here."""
