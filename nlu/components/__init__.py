"""Sanad's Rasa components (imported by Rasa when it loads the model).

Importing the package also installs `schema_cache`: Rasa validates every action-server
answer, NLG answer and posted event list with `jsonschema.validate`, which checks the
schema itself against the meta-schema on every call (~24 ms of CPU for the events
schema, most of a turn's cost). The cached validators check the same instance against
the same schema.
"""

from components.schema_cache import install

install()
