"""Meta-learning: learners that learn how to learn a labeling task from a few examples.

A training loop needs only::

    loss = learner.meta_loss(batch)   # batch: Episode with a leading task axis
    loss.backward()
    optimizer.step()

and labeling needs ``learner.adapt(x, y, weights=...)`` -> ``Adapted`` with
``predict_proba(x)`` and ``embed(x)``. See :mod:`metalabel.meta.functional` for
the BatchNorm choice and the vmap/loop task parallelism.
"""

from metalabel.meta.backbones import (
    MLP,
    Conv4,
    ResNet12,
    available_backbones,
    backbone_spec,
    build_backbone,
    linear_head,
    register_backbone,
)
from metalabel.meta.bayes import BayesProtoNet, GaussianPrototypeClassifier
from metalabel.meta.checkpoint import (
    LEARNERS,
    checkpoint_is_complete,
    load_learner,
    load_run,
    save_learner,
)
from metalabel.meta.functional import Adapted, FastWeightClassifier, MetaLearner, TaskLearner
from metalabel.meta.gnn import GraphClassifier, GraphLearner
from metalabel.meta.maml import MAML
from metalabel.meta.protonet import ProtoNet, PrototypeClassifier
from metalabel.meta.recurrent import RecurrentLearner, SequenceClassifier
from metalabel.meta.reptile import Reptile

__all__ = [
    "LEARNERS",
    "MAML",
    "MLP",
    "Adapted",
    "BayesProtoNet",
    "Conv4",
    "FastWeightClassifier",
    "GaussianPrototypeClassifier",
    "GraphClassifier",
    "GraphLearner",
    "MetaLearner",
    "ProtoNet",
    "PrototypeClassifier",
    "RecurrentLearner",
    "Reptile",
    "ResNet12",
    "SequenceClassifier",
    "TaskLearner",
    "available_backbones",
    "backbone_spec",
    "build_backbone",
    "checkpoint_is_complete",
    "linear_head",
    "load_learner",
    "load_run",
    "register_backbone",
    "save_learner",
]
