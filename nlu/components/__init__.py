"""Sanad's Rasa components (imported by Rasa when it loads the model).

Importing the package also installs `schema_cache` inside Rasa: Rasa validates every
action-server answer, NLG answer and posted event list with `jsonschema.validate`, which
checks the schema itself against the meta-schema on every call (~24 ms of CPU for the
events schema). The cached validators check the same instance against the same schema.
Outside Rasa (no jsonschema: the gateway's pure modules, spelling and crisis) nothing is patched.
"""

from importlib.util import find_spec

if find_spec("jsonschema") is not None and find_spec("rasa") is not None:
    from components.schema_cache import install

    install()
