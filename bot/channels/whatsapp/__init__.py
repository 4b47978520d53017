"""WhatsApp through Twilio: signed webhooks, parsing, sending, templates."""
