"""Sanad package."""
