"""A crisis-phrase override after the classifiers: a crisis phrase always means express_distress.

DIET and the logistic regression learn distress from examples, but a statistical classifier
can still put "I want to kill myself" under some other intent when the rest of the sentence
looks like something else. For the phrases in `nlu/crisis_phrases.yml` (the same list the
gateway reads, through components/crisis.py) we do not gamble: the message becomes
express_distress with confidence 1.0, before the FallbackClassifier looks at it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from components.crisis import crisis_cue

DISTRESS = "express_distress"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class CrisisOverride(GraphComponent):
    """Sets express_distress (confidence 1.0, first in the ranking) when a crisis phrase is present."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {}

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "CrisisOverride":
        return cls()

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT) or ""
            if not text or not crisis_cue(text):
                continue
            ranking = [r for r in message.get(INTENT_RANKING_KEY) or [] if r.get("name") != DISTRESS]
            message.set(INTENT, {"name": DISTRESS, "confidence": 1.0}, add_to_output=True)
            message.set(INTENT_RANKING_KEY, [{"name": DISTRESS, "confidence": 1.0}, *ranking], add_to_output=True)
        return messages
