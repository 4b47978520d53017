"""The cached jsonschema validation (nlu/components/schema_cache.py) rejects what jsonschema rejects (run from nlu/)."""

import sys

sys.path.insert(0, ".")

import components  # noqa: F401  (installs the cached validator inside Rasa)
import jsonschema
from components import schema_cache
from rasa.core.actions.action import RemoteAction

assert jsonschema.validate is schema_cache.validate
spec = RemoteAction.action_response_format_spec()
jsonschema.validate({"events": [{"event": "slot", "name": "x", "value": 1}], "responses": [{"text": "a"}]}, spec)
for bad in ({"events": [{"event": "slot"}]}, {"events": "x"}, {"events": [{"event": "nonsense"}]}):
    for validate in (jsonschema.validate, schema_cache._ORIGINAL):
        try:
            validate(bad, spec)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"accepted {bad}")
print("cached validators reject what jsonschema rejects")
