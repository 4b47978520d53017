"""Clients of systems Sanad does not own: the learning platform and the Rasa server."""
