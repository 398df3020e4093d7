"""Encrypted transfers of personal data between partner agencies."""
