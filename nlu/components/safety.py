"""A crisis-word override after DIET: unmistakable words of self-harm or danger always mean express_distress.

DIET learns distress from examples, but a statistical classifier can still put
"I want to kill myself" under some other intent when the rest of the sentence
looks like something else. For these few unambiguous phrases (written once per
language from common crisis vocabulary, not from the held-out files) we do not
gamble: the message becomes express_distress with confidence 1.0, before the
FallbackClassifier looks at it. Matching runs on the normalised text (the
tokenizer's spelling rules), so diacritics and letter forms do not matter.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from components.normaliser import normalise

DISTRESS = "express_distress"

# whole-phrase cues; \b only around Latin words (Arabic script has no reliable word boundary for re)
_CUES = [
    # English
    r"\bsuicid\w*", r"\bkill(ing)? myself\b", r"\bend(ing)? my life\b", r"\bwant(ed)? to die\b",
    r"\b(hurt|harm|cut)(ing)? myself\b", r"\bself[- ]?harm\w*", r"\bdon'?t want to live\b",
    # French
    r"\bme suicider\b", r"\bme tuer\b", r"\b(envie de|veux) mourir\b", r"\ben finir avec (la|ma) vie\b",
    r"\bplus envie de vivre\b", r"\bme faire du mal\b",
    # German
    r"\bselbstmord\w*", r"\bsuizid\w*", r"\bmich (umbringen|toeten|töten)\b", r"\bumbringen will\b",
    r"\b(will|moechte|möchte) sterben\b", r"\bnicht mehr leben\b", r"\bmir (etwas|was) antun\b",
    # Arabic (normalised: ي -> ی, ة -> ه, أ/إ/آ -> ا)
    r"انتحار", r"انتحر", r"بنتحر", r"اقتل نفسی", r"اقتل حالی", r"بدی موت", r"ارید ان اموت", r"بدی اموت",
    r"اذی نفسی", r"اذی حالی", r"انهی حیاتی",
    # Persian (normalised)
    r"خودکشی", r"خودمو بکشم", r"خودم را بکشم", r"میخوام بمیرم", r"می خوام بمیرم", r"میخواهم بمیرم",
    r"به خودم اسیب", r"میخوام خودمو بکشم",
    # Arabizi and Finglish
    r"\b(ente7er|nte7er|inti7ar|ente7ar)\b", r"\bbadi mout\b", r"\bkhodkoshi\b", r"\bmikham bemiram\b",
]
_PATTERN = re.compile("|".join(_CUES))


def crisis_cue(text: str) -> bool:
    """Whether `text` holds one of the unmistakable crisis phrases."""
    return bool(_PATTERN.search(normalise(text)))


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
