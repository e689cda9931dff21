"""The model of a labeling round: what the learner reads for every pool item, and the heads that adapt to labels.

The model of a round works in an embedding space. With a meta-learned prototype
learner (ProtoNet) the pool is embedded once per round and everything after that
(prototypes from the trusted labels, soft k-means refinement with the unlabeled pool,
calibration folds, generated rows) is cheap arithmetic on those embeddings. Other
learners (MAML, Reptile) adapt with gradient steps.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from metalabel.data.classifier import fit_classifier
from metalabel.data.dataset import LabeledDataset
from metalabel.data.generated import GENERATED_WEIGHT, shared_weights
from metalabel.errors import BadInputError
from metalabel.label.graph import PoolGraph
from metalabel.label.transductive import prototype_logits, refine_prototypes
from metalabel.meta.functional import TaskLearner
from metalabel.meta.protonet import ProtoNet
from metalabel.rules.label_model import LabelModel

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression


def pool_inputs(pool: LabeledDataset, learner: TaskLearner | None, *, encoder: str | None,
                progress: bool) -> Tensor:
    """What the learner reads for every pool item.

    A learner with a convolutional backbone reads the images themselves; otherwise
    the items go through a frozen pretrained encoder (text: MiniLM; images:
    EfficientNet-Lite0, or raw pixels for ``encoder="pixels"``; tables: the numbers), whose
    embeddings come memory-mapped from the embedding cache.
    An ``encoder`` that is unknown or does not read the pool's items is refused, even
    where none is used, so a wrong option is never silently ignored.
    """
    from metalabel.data.encoders import check_encoder

    if encoder is not None:
        encoder = check_encoder(encoder, pool.modality)
    takes_images = learner is not None and reads_images(learner)
    if takes_images:
        if pool.modality != "image":
            raise BadInputError(f"the model reads images but the pool holds {pool.modality}",
                                hint="use a model meta-trained on embeddings, or no model (--model none)")
        images = torch.from_numpy(np.asarray(pool.items)).float().div_(255)
        return images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    if pool.modality == "tabular":
        features = torch.from_numpy(np.asarray(pool.items, dtype=np.float32))
        # standardize so no column dominates the distances by its unit alone
        return (features - features.mean(0)) / features.std(0).clamp_min(1e-6)
    from metalabel.data.encoders import embed_dataset

    # memory-mapped from the embedding cache, not a heap copy: a round's driver memory need not hold the pool's
    # [N, d] (bench/results/scale.md); the round only reads it (a write would copy the pages it touches)
    return torch.from_numpy(embed_dataset(pool, feature_space(pool, learner, encoder=encoder), progress=progress,
                                          mmap=True))


def feature_space(pool: LabeledDataset, learner: TaskLearner | None, *, encoder: str | None) -> str:
    """What ``pool_inputs`` gives the learner, named: ``images``, ``standardized columns`` or the encoder."""
    from metalabel.data.encoders import check_encoder, default_encoder

    if learner is not None and reads_images(learner):
        return "images"
    if pool.modality == "tabular":
        return "standardized columns"
    if encoder is not None:
        return check_encoder(encoder, pool.modality)
    return default_encoder(pool.modality)


SMALL_IMAGE = 64  # pixels a side: images this small are also read as raw pixels


def rival_spaces(pool: LabeledDataset, learner: TaskLearner | None, *, encoder: str | None) -> list[str]:
    """Encoders whose space competes with ``feature_space``'s, read by nearest class mean and the heads.

    Small images (at most ``SMALL_IMAGE`` pixels a side) are read as raw pixels too:
    ImageNet features describe small grayscale images (characters, digits, clothing
    thumbnails) little better than their pixels, and on some sets worse. The round's
    judge keeps whichever space predicts held-out labels best; a learner that reads the
    images itself, or a pool already read as pixels, has no rival.
    """
    if pool.modality != "image" or feature_space(pool, learner, encoder=encoder) in ("pixels", "images"):
        return []
    items = pool.items
    small = isinstance(items, np.ndarray) and items.ndim in (3, 4) and max(items.shape[1:3]) <= SMALL_IMAGE
    return ["pixels"] if small else []


def reads_images(learner: TaskLearner) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in learner.backbone.modules())


def default_learner() -> ProtoNet:
    """Nearest class mean in the encoder's space: a ProtoNet whose embedding is the identity."""
    from metalabel.meta.backbones import build_backbone

    return ProtoNet(build_backbone("identity"))


def learner_hash(learner: TaskLearner) -> str:
    """A short content hash of the learner's weights and config: the provenance of a model label."""
    digest = hashlib.sha256(json.dumps(learner.config(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(learner.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- the model of a round


class RoundModel:
    """The learner adapted to the project's trusted labels, and its predictions for the pool.

    In a prototype learner's embedding space six heads compete each round (the round
    keeps the one that predicts held-out human labels best): label propagation over the
    pool's nearest-neighbour graph (strongest with a few labels per class), class
    prototypes, prototypes refined with the unlabeled pool (soft k-means), a linear probe
    (logistic regression), the ensemble of the probe and the propagation (the product
    of their probabilities, strongest once labels number in the hundreds), and the probe
    self-trained on the pool's pseudo-labels (spaces up to 512 dimensions). Propagation
    comes first because a round without held-out labels (one per class) keeps the first:
    from one label per class on Fashion-MNIST it labeled 60-71% of the pool right where
    prototypes did 44-56% (5 seeds).

    With labeling functions (``rule_votes``, ``metalabel.rules``), the rules heads add
    the log posterior of a label model fitted to the rules' votes (Dawid-Skene, the fold's
    human labels as anchors), times a weight, to a head's log-probabilities: a product of
    experts, like the ensemble. Items no rule fired on keep the head's prediction. The
    weights below 1 temper the label model, whose posterior is sharper than it is right
    (it takes the rules as independent): on 20 Newsgroups with keyword rules the best
    weight ran from 0.1 to 1 by seed and label count, so the judge chooses. Rules heads
    come last, so the judge keeps one only where it predicts held-out labels better.
    """

    HEADS = ("label propagation", "prototypes", "soft k-means", "linear probe", "ensemble", "self-training")
    RULE_HEADS: dict[str, tuple[float, str]] = {  # name -> (weight of the rules, the head they join)
        f"rules{suffix} + {base}": (weight, base)
        for base in ("label propagation", "ensemble")  # the strongest heads with few labels and with many
        for weight, suffix in ((1.0, ""), (0.5, "/2"), (0.25, "/4"))}
    LINEAR_PROBE_MAX_ROWS = 5000  # pseudo-labels beyond this are subsampled: the fit stays a second or two
    SELF_TRAINING_SHARES = (0.3, 0.6, 0.9)  # of the unlabeled items, in equal numbers per class, step by step
    SELF_TRAINING_MAX_DIMENSIONS = 512  # wider spaces skip the head: its refits cost minutes a round there

    def __init__(self, learner: TaskLearner, x: Tensor, *, head: str = "prototypes", refine_steps: int = 1,
                 seed: int = 0, graph_holder: list[PoolGraph] | None = None,
                 rule_votes: np.ndarray | None = None) -> None:
        self.learner = learner.eval()
        self.x = x
        self.head = head
        self.refine_steps = refine_steps
        self.seed = seed
        self.expand: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None
        self.generated_weight = GENERATED_WEIGHT
        self.prototype_space = isinstance(learner, ProtoNet)
        if isinstance(learner, ProtoNet):  # the prototype space
            if isinstance(learner.backbone, torch.nn.Identity):  # nearest class mean: the inputs are the space
                self.pool_embeddings = x  # (a copy was a second [N, d] on the driver, bench/results/scale.md)
            else:
                with torch.no_grad():
                    self.pool_embeddings = in_chunks(learner.embed, x)
        # The pool graph, built on first use and shared by the variants (one embedding, one graph); a caller
        # that keeps the same learner across rounds passes the same holder, so a big pool's graph is built once.
        self._graph: list[PoolGraph] = [] if graph_holder is None else graph_holder
        self.rule_votes = rule_votes  # [N, m] class indices, -1 where a rule abstained
        # label model fits by anchor set, shared by the variants: a fold's fit serves every rules head
        self._rule_fits: dict[bytes, np.ndarray] = {}
        # linear probes by training set, shared by the variants: the probe, the ensemble and self-training's first
        # step fit the same one on a fold's labels
        self._probe_fits: dict[bytes, LogisticRegression] = {}

    def variants(self) -> list[RoundModel]:
        """One model per head (one embedding pass serves them all); learners without an embedding space: itself.

        With rule votes, the "rules + <head>" heads come after the others.
        """
        if not self.prototype_space:  # the learner's own prediction is the head the rules join: one per weight
            return [self] if self.rule_votes is None else [self, *(
                self._with_head(head) for head, (_, base) in self.RULE_HEADS.items() if base == "label propagation")]
        heads = [h for h in self.HEADS if (h != "soft k-means" or self.refine_steps > 0)
                 and (h != "self-training" or self.pool_embeddings.shape[1] <= self.SELF_TRAINING_MAX_DIMENSIONS)]
        if self.rule_votes is not None:
            heads += list(self.RULE_HEADS)
        return [self._with_head(head) for head in heads]

    @property
    def uses_rules(self) -> bool:
        return self.head in self.RULE_HEADS

    def _with_head(self, head: str) -> RoundModel:
        model = copy.copy(self)
        model.head = head
        return model

    def with_generated(self, expand: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                       *, weight: float) -> RoundModel:
        """This model, with every support set grown by ``expand`` (generated rows from the human-labeled ones)."""
        model = copy.copy(self)
        model.expand, model.generated_weight = expand, weight
        return model

    def logits(self, support: np.ndarray, y: np.ndarray, weights: np.ndarray, ways: int,
               targets: np.ndarray | None = None) -> np.ndarray:
        """Logits [len(targets) or N, ways] after adapting to ``support`` items with labels ``y``."""
        targets = np.arange(len(self.x)) if targets is None else targets
        if self.uses_rules:
            weight, base = self.RULE_HEADS[self.head]
            return (self._with_head(base).logits(support, y, weights, ways, targets)
                    + weight * self._rule_log_probs(support, y, weights, ways)[targets])
        weight_tensor = torch.as_tensor(weights, dtype=torch.float32)
        label_tensor = torch.as_tensor(y, dtype=torch.long)
        if not self.prototype_space:
            adapted = self.learner.adapt(self.x[support], label_tensor, weights=weight_tensor)
            with torch.no_grad():
                return in_chunks(lambda chunk: adapted.predict_proba(chunk).clamp_min(1e-12).log(),
                                  self.x[targets]).numpy()
        if self.head == "label propagation":
            return self._propagated_log_probs(support, y, weights, ways)[targets]
        emb = self.pool_embeddings
        support_emb = emb[support]
        propagated = self._propagated_log_probs(support, y, weights, ways)[targets] if self.head == "ensemble" else None
        if self.expand is not None:
            real = np.flatnonzero(weights >= 1)  # generators grow the human-labeled rows, not the pseudo-labels
            new_x, new_y = self.expand(support_emb[real].numpy(), y[real], self.seed)
            if len(new_y):
                support_emb = torch.cat([support_emb, torch.as_tensor(new_x, dtype=support_emb.dtype)])
                y = np.concatenate([y, new_y])
                real_scale, generated = shared_weights(len(real), len(new_y), self.generated_weight)
                weights = weights.copy()
                weights[real] *= real_scale
                weights = np.concatenate([weights, np.full(len(new_y), generated)])
                label_tensor = torch.as_tensor(y, dtype=torch.long)
                weight_tensor = torch.as_tensor(weights, dtype=torch.float32)
        if self.head == "self-training":
            return self._self_trained_log_probs(support, support_emb.numpy(), y, weights, ways)[targets]
        if self.head in ("linear probe", "ensemble"):
            probe = self._linear_probe_logits(support_emb.numpy(), y, weights, ways, targets,
                                              key=None if self.expand is not None else (support, y, weights))
            return probe if propagated is None else probe + propagated
        steps = self.refine_steps if self.head == "soft k-means" else 0
        with torch.no_grad():
            # over the whole pool with the support's rows excluded: a copy of the unlabeled rows was [N, d]
            prototypes = refine_prototypes(support_emb, label_tensor, emb, ways=ways, steps=steps,
                                           support_weights=weight_tensor, exclude=torch.as_tensor(support))
            return torch.cat([prototype_logits(rows, prototypes) for rows in self._rows(targets, 2048)]).numpy()

    def _rows(self, targets: np.ndarray, size: int) -> Iterator[Tensor]:
        """The pool embeddings of ``targets``, ``size`` at a time: slices of the pool's own tensor when they are all
        of it, else gathered block by block (never an ``[N, d]`` copy)."""
        emb = self.pool_embeddings
        whole = len(targets) == len(emb) and bool((targets == np.arange(len(emb))).all())
        for start in range(0, len(targets), size):
            yield emb[start:start + size] if whole else emb[torch.as_tensor(targets[start:start + size])]

    def _linear_probe_logits(self, support_emb: np.ndarray, y: np.ndarray, weights: np.ndarray, ways: int,
                             targets: np.ndarray, *,
                             key: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """A logistic regression's log-probabilities of the pool items ``targets``; fitted once per ``key`` (pool
        positions, classes, weights)."""
        cache_key = None if key is None else b"|".join(np.ascontiguousarray(part).tobytes() for part in key)
        probe = self._probe_fits.get(cache_key) if cache_key is not None else None
        if probe is None:
            from sklearn.linear_model import LogisticRegression

            rows = np.arange(len(y))
            pseudo = np.flatnonzero(weights < 1)
            if len(pseudo) > self.LINEAR_PROBE_MAX_ROWS:
                keep = np.random.default_rng(self.seed).choice(pseudo, self.LINEAR_PROBE_MAX_ROWS, replace=False)
                rows = np.concatenate([np.flatnonzero(weights >= 1), keep])
            # classes weighted to equal totals: labels answered by active learning crowd the classes the model
            # confused, and an unweighted probe on unit-length text embeddings then leans to those classes (20
            # Newsgroups, 3k posts, 5 seeds a class + 45 answers: 54% of the pool right unweighted, 68% weighted)
            probe = fit_classifier(LogisticRegression(max_iter=300, class_weight="balanced"),
                                   support_emb[rows], y[rows], sample_weight=weights[rows])
            if cache_key is not None:
                if len(self._probe_fits) >= 32:  # a round fits one per fold; older rounds' fits are stale
                    self._probe_fits.clear()
                self._probe_fits[cache_key] = probe
        logits = np.full((len(targets), ways), -1e4)  # a class the fold lacks gets (almost) no probability
        # by blocks of rows: the regression's float64 weights would make numpy cast a whole float32 pool to float64
        for start, target_rows in zip(range(0, len(targets), PREDICT_ROWS), self._rows(targets, PREDICT_ROWS),
                                      strict=True):
            with np.errstate(divide="ignore"):  # a probability that rounds to 0 is log 0: -inf, clipped below
                block = probe.predict_log_proba(target_rows.numpy())
            logits[start:start + PREDICT_ROWS, probe.classes_] = np.maximum(block, -1e4)
        return logits

    def _self_trained_log_probs(self, support: np.ndarray, support_emb: np.ndarray, y: np.ndarray,
                                weights: np.ndarray, ways: int) -> np.ndarray:
        """The linear probe's log-probabilities for every pool item after self-training it on the pool.

        Each step takes, for every class, an equal number of the unlabeled items the current
        probe predicts as that class, those it is surest of, and refits the probe on the labels
        plus those pseudo-labels; the number grows step by step. Equal numbers keep a class the
        probe already favours from swallowing the pool: on 20 Newsgroups (3k posts, 5 labels a
        class) that labeled 70-74% of the pool right where taking each class's surest share
        did 69-70% and the ensemble 67-69%. Only ``support``'s labels are read: an item the
        caller holds out may be pseudo-labeled with the probe's own guess, exactly as a
        candidate is.
        """
        emb = self.pool_embeddings.numpy()
        everything = np.arange(len(emb))
        log_probs = self._linear_probe_logits(support_emb, y, weights, ways, everything,
                                              key=None if self.expand is not None else (support, y, weights))
        unlabeled = np.ones(len(emb), dtype=bool)
        unlabeled[support] = False
        for share in self.SELF_TRAINING_SHARES:
            per_class = min(int(np.ceil(share * unlabeled.sum() / ways)), self.LINEAR_PROBE_MAX_ROWS // ways)
            pseudo, pseudo_classes = surest_per_class(log_probs, unlabeled, per_class)
            rows = np.concatenate([support_emb, emb[pseudo]])
            labels = np.concatenate([y, pseudo_classes])
            log_probs = self._linear_probe_logits(rows, labels, np.concatenate([weights, np.ones(len(pseudo))]),
                                                  ways, everything)
        return log_probs

    def _propagated_log_probs(self, support: np.ndarray, y: np.ndarray, weights: np.ndarray,
                              ways: int) -> np.ndarray:
        """Log class scores of every pool item from label propagation (generated rows are not pool items)."""
        if not self._graph:
            self._graph.append(PoolGraph.build(self.pool_embeddings.numpy(), seed=self.seed))
        scores = self._graph[0].propagate(support, y, weights, ways)
        return np.log(np.maximum(scores, 1e-12))

    def _rule_log_probs(self, support: np.ndarray, y: np.ndarray, weights: np.ndarray,
                        ways: int) -> np.ndarray:
        """The label model's log posterior for every pool item, anchored on the human labels among ``support``.

        Zero where no rule fired: there the head's prediction stands alone. Accepted model
        labels (weight < 1) are not anchors: the label model would learn the model's mistakes.
        """
        assert self.rule_votes is not None
        human = weights >= 1
        anchors, classes = support[human].astype(np.int64), y[human].astype(np.int64)
        key = anchors.tobytes() + b"|" + classes.tobytes() + b"|" + str(ways).encode()
        if key not in self._rule_fits:
            if len(self._rule_fits) >= 32:  # a round asks for one fit per fold; older rounds' fits are stale
                self._rule_fits.clear()
            fired = (self.rule_votes >= 0).any(1, keepdims=True)
            model = LabelModel(ways).fit(self.rule_votes, anchors=anchors, anchor_classes=classes)
            self._rule_fits[key] = np.where(fired, model.predict_log_proba(self.rule_votes), 0.0)
        return self._rule_fits[key]

    def embeddings(self) -> np.ndarray:
        if self.prototype_space:
            return self.pool_embeddings.numpy()
        return self.x.flatten(1).numpy()


def surest_per_class(log_probs: np.ndarray, eligible: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and predicted classes of at most ``count`` ``eligible`` items per predicted class, the surest."""
    predicted, confidence = log_probs.argmax(1), log_probs.max(1)
    chosen = [members[np.argsort(-confidence[members], kind="stable")[:count]]
              for members in (np.flatnonzero(eligible & (predicted == c)) for c in np.unique(predicted[eligible]))]
    positions = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return positions, predicted[positions]


PREDICT_ROWS = 8192  # pool rows predicted at a time: a prediction's temporaries stay bounded on a big pool


def in_chunks(function: Callable[[Tensor], Tensor], x: Tensor, size: int = 2048) -> Tensor:
    return torch.cat([function(x[start:start + size]) for start in range(0, len(x), size)])
