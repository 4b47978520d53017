"""Hand-off of a conversation from the assistant to a human mentor, and back."""
