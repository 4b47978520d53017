"""A whitespace tokenizer whose tokens carry one spelling (components/spelling.py).

The tokens keep their offsets in the original text (entities are cut from it)
while their text is normalised, so every featurizer after this sees one spelling,
the same one the crisis phrases are matched on.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Text

from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.training_data.message import Message

from components.spelling import normalise


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=False)
class NormalisingTokenizer(WhitespaceTokenizer):
    """WhitespaceTokenizer whose tokens carry normalised text and original offsets."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return WhitespaceTokenizer.get_default_config()

    @staticmethod
    def not_supported_languages() -> Optional[List[Text]]:
        return None

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "NormalisingTokenizer":
        return cls(config)

    def tokenize(self, message: Message, attribute: Text) -> List[Token]:
        tokens = super().tokenize(message, attribute)
        out: List[Token] = []
        for token in tokens:
            text = normalise(token.text)
            if not text:
                continue
            out.append(Token(text, token.start, token.end, data=token.data, lemma=normalise(token.lemma or token.text)))
        return out or tokens
