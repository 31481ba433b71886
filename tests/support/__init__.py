"""Helpers the tests share (imported as `support.<module>`: pyproject's pytest `pythonpath`
puts tests/ on sys.path). Not tests: pytest collects nothing here."""
