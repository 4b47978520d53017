"""One conversation in order: accept inbound messages, take them one by one, route, ask Rasa, reply."""
