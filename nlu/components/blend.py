"""A second opinion for DIET: logistic regression on the same sparse features, blended.

DIET alone moves by one or two points between data rounds and is often
confidently wrong (0.99 on the wrong intent) on short messages. A linear model
on the word and character n-gram counts is stable, cheap to train (seconds) and
errs differently. This component runs after DIET: it fits a logistic regression
on the sentence-level features and, at run time, replaces DIET's ranking with
`diet_weight * DIET + (1 - diet_weight) * logistic regression`. The
FallbackClassifier then sees the blended confidences.

With `expose_parts: true` the two rankings are also put in the parse result
(`diet_ranking`, `lr_ranking`), which nlu/report.py uses to compare weights.
"""

from __future__ import annotations

from typing import Any

from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

RANKING_SIZE = 10


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class BlendedLogisticRegression(LogisticRegressionClassifier):
    """Logistic regression whose probabilities are averaged with the ranking already set (DIET's)."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            **LogisticRegressionClassifier.get_default_config(),
            "max_iter": 300,
            "diet_weight": 0.5,
            "expose_parts": False,
        }

    def __init__(self, config: dict[str, Any], name: str, model_storage: ModelStorage, resource: Resource) -> None:
        super().__init__(config, name, model_storage, resource)
        weight = float(self.config["diet_weight"])
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"diet_weight must be within [0, 1], got {weight}")
        self.diet_weight = weight

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> BlendedLogisticRegression:
        return cls(config, execution_context.node_name, model_storage, resource)

    def process(self, messages: list[Message]) -> list[Message]:
        if not messages or not hasattr(self.clf, "classes_"):
            return messages
        probas = self.clf.predict_proba(self._create_X(messages))
        classes = [str(c) for c in self.clf.classes_]
        for message, row in zip(messages, probas, strict=True):
            lr = {name: float(p) for name, p in zip(classes, row, strict=True)}
            diet = {r["name"]: float(r["confidence"]) for r in message.get(INTENT_RANKING_KEY) or []}
            names = set(lr) | set(diet)
            blended = {n: self.diet_weight * diet.get(n, 0.0) + (1.0 - self.diet_weight) * lr.get(n, 0.0)
                       for n in names}
            ranking = sorted(({"name": n, "confidence": c} for n, c in blended.items()),
                             key=lambda r: -r["confidence"])[:RANKING_SIZE]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
            if self.config["expose_parts"]:
                message.set("diet_ranking", sorted(diet.items(), key=lambda kv: -kv[1]), add_to_output=True)
                message.set("lr_ranking", sorted(lr.items(), key=lambda kv: -kv[1]), add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        # training examples keep their gold intents
        return training_data
