"""A whitespace tokenizer that also normalises Arabic and Persian spelling.

Learners type on phones with whatever keyboard they have: with or without
diacritics, with tatweel, with Arabic or Persian forms of ya and kaf, with
Arabic-Indic digits, with or without the zero-width non-joiner. The tokens keep
their offsets in the original text (entities are cut from it) while their text
is normalised, so every featurizer after this sees one spelling.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Text

from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.training_data.message import Message

_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640\u200c\u200d\u200f\u200e]")
_REPEATS = re.compile(r"(.)\1{2,}")
_TABLE = str.maketrans(
    {
        "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا",
        "ى": "ی", "ي": "ی", "ئ": "ی",
        "ك": "ک",
        "ة": "ه", "ۀ": "ه",
        "ؤ": "و",
        "٠": "0", "١": "1", "٢": "2", "٣": "3", "٤": "4",
        "٥": "5", "٦": "6", "٧": "7", "٨": "8", "٩": "9",
        "۰": "0", "۱": "1", "۲": "2", "۳": "3", "۴": "4",
        "۵": "5", "۶": "6", "۷": "7", "۸": "8", "۹": "9",
    }
)


def normalise(text: str) -> str:
    """One spelling for the variants people type; lowercase; 'pleeease' -> 'pleease'."""
    text = _DIACRITICS.sub("", text).translate(_TABLE).lower()
    return _REPEATS.sub(r"\1\1", text)


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
