"""The gateway's HTTP side: the app, provider webhooks, web chat, Rasa's NLG endpoint and the mentor console."""
