"""One round of data generation in a model's embedding space, each part kept or dropped on held-out evidence.

Three generators, each judged by whether adding its output raises held-out accuracy
(``evidence``): an augmentation policy (searched each round, starting from the last
round's, so operations that stop helping are dropped), a feature hallucinator
meta-trained through a prototype classifier's query loss on many tasks (the pool's
pseudo-classes; a third of them are kept out for judging), and a class-conditional VAE
for 28x28 grayscale images (learning from accepted labels). Two more where the caller gives
what they need: a conditional feature WGAN-GP (``gan``, off by default) learning from the accepted rows, and for
a table's columns a class-conditional Bayesian network (``bayesnet``) refitted on each judging
fold's rows plus the accepted ones. The judge is k-fold accuracy
on the human labels when enough classes have two or more; before that, few-shot
episodes over the judging pseudo-classes. Human labels never train a generator.

With ``learn=False`` (feedback off) a fixed hand-set policy is used and every generator
is kept unjudged: the baseline the benchmark compares feedback against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from metalabel.data.generated import GENERATED_WEIGHT
from metalabel.errors import check_whole_number
from metalabel.generate.augment import AugmentationPolicy, Operation, expand
from metalabel.generate.evidence import Expander, episode_accuracy, held_out_accuracy, principal_components
from metalabel.generate.policy_search import search_policy

if TYPE_CHECKING:  # the VAE and the GAN need torch, which the engine imports only when it trains one
    from metalabel.generate.gan import TrainedGAN
    from metalabel.generate.vae import TrainedVAE

FIXED_POLICY = AugmentationPolicy("embedding", (Operation("gaussian_noise", 0.5, 0.5),
                                                Operation("mix_within_class", 0.5, 0.5)))
"""A reasonable hand-set policy: what a person might pick without feedback."""

POLICY_CANDIDATES = tuple(Operation(name, 0.5, magnitude)
                          for name in ("gaussian_noise", "dropout", "mix_within_class", "class_direction")
                          for magnitude in (0.3, 0.7))
JUDGE_DIMS = 64
"""The policy searches' judge classifies in the pool's top principal components (quick enough for dozens of
candidates a round); keep-or-drop decisions for the learned generators use the full feature space."""
NO_JUDGE = "nothing to judge by yet"
"""``GenerationStep.judge`` where neither held-out human labels nor pseudo-class episodes could judge."""
JUDGE_REPEATS = 3
"""Cross-validation repeats of the held-out judge: one split of a few labels per class is too noisy."""
MIN_GAIN = 0.005
"""An operation must raise held-out accuracy by more than half a point to join: smaller gains are noise."""
IMAGE_POLICY_CANDIDATES = tuple(Operation(name, 0.5, magnitude)
                                for name in ("rotate", "scale", "translate", "elastic", "contrast", "noise")
                                for magnitude in (0.3, 0.6)) + (Operation("hflip", 0.5, 0.5),)


@dataclass(frozen=True)
class GeneratorOptions:
    """What a round may generate and how it is judged."""

    augment: bool = True
    hallucinate: bool = True
    synthesize: bool = True  # the VAE; used only for 28x28 grayscale image pools
    # the feature WGAN-GP, used only when the step is given accepted rows. Off: in bench/results/generation.md
    # it added nothing measurable where it could be judged (+1.1 +- 3.0 and +0.1 +- 0.4 points on Fashion-MNIST
    # at 5 and 10 labels per class) and takes 25-90 s a round on two busy CPU cores
    gan: bool = False
    bayesnet: bool = True  # the Bayesian network; used only when the step's rows are a table's columns
    learn: bool = True
    copies: int = 4  # augmented copies of each human-labeled item
    per_class: int = 5  # hallucinated or synthesized items per class
    hallucinator_steps: int = 300
    vae_steps: int = 600
    gan_steps: int = 300
    vae_regrowth: float = 1.5  # retrain the VAE or the GAN once its training set has grown by half
    generated_weight: float = GENERATED_WEIGHT  # a generated row counts this much next to a real one
    episodes: int = 40

    def __post_init__(self) -> None:
        for name in ("copies", "per_class", "hallucinator_steps", "vae_steps", "gan_steps", "episodes"):
            check_whole_number(name, getattr(self, name), minimum=1)


@dataclass(frozen=True, eq=False)
class SyntheticBatch:
    """What one generator made from the human-labeled items this round, and the verdict on it."""

    generator: str  # "augment", "image augment", "hallucinator", "vae", "gan", "bayesnet"
    kind: str  # "augmented" or "generated"
    version: str
    x: np.ndarray  # [M, D] features in the round's embedding space
    y: np.ndarray  # [M] class indices
    parents: np.ndarray  # [M] row of the human-labeled items each came from; -1 when made from a whole class
    content: np.ndarray  # what is stored: the features, or uint8 images
    kept: bool
    evidence: str


@dataclass(frozen=True, eq=False)
class GenerationStep:
    """A round's generators: the kept ones expand the support of the round's model. ``policy`` and
    ``image_policy`` are the augmentation policies the generator holds after the round (for features and
    for images), the next round's starting points."""

    policy: AugmentationPolicy | None
    batches: tuple[SyntheticBatch, ...]
    feedback: tuple[str, ...]
    judge: str
    expanders: tuple[Expander, ...] = field(default=())
    image_policy: AugmentationPolicy | None = None

    def expand(self, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows every kept generator adds to a support set ``(x, y)``."""
        if not self.expanders:
            return x[:0], y[:0]
        return _combined(list(self.expanders))(x, y, seed)


@dataclass(frozen=True, eq=False)
class ImageInputs:
    """Images behind the features, for image policies and the VAE. ``featurize`` maps uint8 images to features."""

    labeled: np.ndarray  # uint8 [N, H, W] of the human-labeled items, aligned with their features
    featurize: Callable[[np.ndarray], np.ndarray]
    # uint8 [M, 28, 28] for the VAE. Not the human-labeled items: they are the held-out evidence the
    # VAE is judged by, and a VAE trained on them would hand their labels back to the judge.
    train_images: np.ndarray | None = None
    train_labels: np.ndarray | None = None
    train_weights: np.ndarray | None = None
    search_policy: bool = False  # search kornia image policies (only when featurize is cheap)


@dataclass(frozen=True, eq=False)
class AcceptedRows:
    """Pool rows with accepted (model) labels: what the GAN and the Bayesian network learn from.

    Never the human labels: those are the held-out evidence the judge keeps or drops a generator by.
    """

    positions: np.ndarray  # rows of the step's pool_x
    classes: np.ndarray  # their accepted class indices


class DataGenerator:
    """Runs the generators each round and remembers the augmentation policy between rounds."""

    def __init__(self, options: GeneratorOptions = GeneratorOptions(), *, policy: AugmentationPolicy | None = None,
                 image_policy: AugmentationPolicy | None = None) -> None:
        self.options = options
        self.policy = policy
        self.image_policy = image_policy
        # (trained VAE, images it learned from, their classes): retrained when the set grew
        self._vae: tuple[TrainedVAE, int, np.ndarray] | None = None
        self._gan: tuple[TrainedGAN, int, np.ndarray] | None = None  # the same, for the GAN
        self.project: Callable[[np.ndarray], np.ndarray] | None = None  # the judges' projection, set each step

    def step(self, x: np.ndarray, y: np.ndarray, *, pool_x: np.ndarray, pool_y: np.ndarray,
             images: ImageInputs | None = None, accepted: AcceptedRows | None = None, table: bool = False,
             seed: int = 0) -> GenerationStep:
        """Generate from the human-labeled items ``(x, y)``; ``(pool_x, pool_y)`` are tasks to learn and judge on.

        ``pool_y`` labels the pool's rows with pseudo-classes (clusters, accepted labels; -1: none).
        ``accepted`` (rows of ``pool_x`` with accepted labels) is what the GAN learns from; ``table``
        says the rows are a table's (standardized) columns, where the Bayesian network applies.
        """
        options = self.options
        # a third of the pseudo-classes are kept for judging: a generator that learns from the
        # pool's classes is then judged on classes it never learned from
        judge_y = _judged_classes(pool_y, share=1 / 3, seed=seed)
        self.project = principal_components(pool_x, dims=JUDGE_DIMS, seed=seed)
        # Two judges on the same held-out data: a quick one in a few principal components for the
        # policy searches (dozens of candidates), and one in the full space for keeping or dropping a
        # learned generator. The measured reason: in 64 dimensions a classifier of a few dozen items
        # barely moves with extra rows, and that judge saw +0.9 points where the test set saw +7.9.
        judge_name, quick = self._judge(x, y, pool_x, judge_y, seed=seed, featurize=self.project)
        _, full = self._judge(x, y, pool_x, judge_y, seed=seed, featurize=None)
        human_judged = judge_name.startswith("held-out human")
        feedback: list[str] = []
        batches: list[SyntheticBatch] = []
        expanders: list[Expander] = []

        # Scores by judge and the generators judged together. Each generator is scored against the kept ones
        # alone, which are what the one before it was scored with (or it, once kept): a score judged again
        # would be the same (every fold and generator is seeded), and in the full space it is 15 fits.
        # The key holds the judge and the expanders themselves, so no id is reused while it is cached.
        scores: dict[tuple[Callable[[Expander | None], float], tuple[Expander, ...]], float] = {}

        def with_kept(judge) -> Callable[[Expander | None], float] | None:
            """``judge`` of the generators kept so far plus another (None: just the kept ones)."""
            if judge is None:
                return None

            def score(expander: Expander | None) -> float:
                together = (*expanders, *([expander] if expander else []))
                if (judge, together) not in scores:
                    scores[judge, together] = judge(_combined(list(together)) if together else None)
                return scores[judge, together]
            return score

        def consider(made) -> None:
            if made is None:
                return
            batch, expander = made
            batches.append(batch)
            if batch.kept:
                expanders.append(expander)

        if options.augment:
            self.policy, made = self._augment(x, y, quick, feedback, seed)
            consider(made)
        if options.augment and options.learn and images is not None and images.search_policy and human_judged:
            consider(self._augment_images(x, y, images, with_kept(quick), feedback, seed))
        if options.hallucinate:
            made = self._hallucinate(x, y, pool_x, pool_y, np.unique(judge_y[judge_y >= 0]), with_kept(full),
                                     human_judged, seed)
            if made is not None:
                feedback.append(f"hallucinator {'kept' if made[0].kept else 'dropped'}: {made[0].evidence}")
            consider(made)
        if options.synthesize and images is not None and images.train_images is not None:
            if not human_judged and options.learn:
                feedback.append("VAE not trained: no held-out human labels to judge it by yet")
            else:
                made = self._synthesize(images, with_kept(full), seed)
                if made is not None:
                    feedback.append(f"VAE {'kept' if made[0].kept else 'dropped'}: {made[0].evidence}")
                consider(made)
        # Like the VAE, the GAN and the network are judged on held-out human labels only: trained with feedback
        # on before two labels per class, they could be judged by nothing but pseudo-class episodes.
        for name, wanted, make in (("GAN", options.gan and accepted is not None,
                                    lambda: self._feature_gan(pool_x, accepted, with_kept(full), seed)),
                                   ("Bayesian network", options.bayesnet and table,
                                    lambda: self._bayesnet(x, y, pool_x, accepted, with_kept(full), seed))):
            if not wanted:
                continue
            if not human_judged and options.learn:
                feedback.append(f"{name} not trained: no held-out human labels to judge it by yet")
                continue
            made = make()
            if made is not None:
                feedback.append(f"{name} {'kept' if made[0].kept else 'dropped'}: {made[0].evidence}")
            consider(made)
        return GenerationStep(self.policy, tuple(batches), tuple(feedback), judge_name, tuple(expanders),
                              image_policy=self.image_policy)

    # -- judging
    def _judge(self, x, y, pool_x, pool_y, *, seed, featurize):
        counts = np.bincount(y)
        options = self.options
        if (counts >= 2).sum() >= max(2, (counts > 0).sum() // 2):
            return "held-out human labels", lambda expander: held_out_accuracy(
                x, y, expand=expander, seed=seed, classifier="logistic", generated_weight=options.generated_weight,
                repeats=JUDGE_REPEATS, featurize=featurize)
        pseudo_counts = np.bincount(pool_y[pool_y >= 0]) if (pool_y >= 0).any() else np.zeros(0, dtype=np.int64)
        shots = max(1, int(counts[counts > 0].min()))
        ways = min(5, int((pseudo_counts >= shots + 5).sum()))
        if ways < 2:
            return NO_JUDGE, None
        return "held-out episodes of the pool's pseudo-classes", lambda expander: episode_accuracy(
            pool_x, pool_y, expand=expander, ways=ways, shots=shots, episodes=options.episodes, seed=seed,
            generated_weight=options.generated_weight, featurize=featurize)

    # -- the generators
    def _augment(self, x, y, judge, feedback, seed):
        """The embedding policy, searched from last round's on ``judge``; returns it and (batch, expander) or None."""
        options = self.options
        if not options.learn:
            policy, evidence = FIXED_POLICY, "hand-set policy, not judged (feedback off)"
        elif judge is None:
            return self.policy, None
        else:
            search = search_policy(lambda p: judge(_policy_expander(p, options.copies)), modality="embedding",
                                   candidates=POLICY_CANDIDATES, start=self.policy, min_gain=MIN_GAIN)
            policy = search.best
            feedback.extend(f"augmentation: {change}" for change in search.changes)
            evidence = (f"{policy.describe()}: {search.best_score:.1%} vs {search.baseline_score:.1%} "
                        f"without augmentation")
            if not search.changes and policy.operations:
                feedback.append(f"augmentation kept as it was: {evidence}")
        if not policy.operations:
            return policy, None
        expander = _policy_expander(policy, options.copies)
        new_x, new_y = expander(x, y, seed)
        parents = np.tile(np.arange(len(y)), options.copies)
        return policy, (SyntheticBatch("augment", "augmented", policy.version, new_x, new_y, parents, new_x, True,
                                       evidence), expander)

    def _augment_images(self, x, y, images, judge, feedback, seed):
        copies = max(1, self.options.copies // 2)

        def image_expander(policy: AugmentationPolicy) -> Expander:
            # Every labeled image is augmented and embedded once per policy, and each of the judge's folds takes
            # the copies of its training items: the judge calls an expander 15 times (5 folds, 3 repeats), and
            # embedding fresh copies each time through a conv learner was two thirds of a kanji round.
            made_once: list[tuple[np.ndarray, np.ndarray]] = []

            def make(train_x, train_y, fold_seed):
                if not made_once:
                    made = expand(images.labeled, y, policy, copies=copies, seed=seed)
                    made_once.append((made.parents, images.featurize(made.x)))
                parents, features = made_once[0]
                # the judge hands over feature rows; the labeled items behind them are found by value
                slot = np.full(len(x), -1)
                slot[_rows_of(train_x, x)] = np.arange(len(train_x))
                keep = slot[parents] >= 0
                return features[keep], np.asarray(train_y)[slot[parents[keep]]]
            return make

        search = search_policy(lambda p: judge(image_expander(p)), modality="image",
                               candidates=IMAGE_POLICY_CANDIDATES, start=self.image_policy, min_gain=MIN_GAIN)
        self.image_policy = search.best
        feedback.extend(f"image augmentation: {change}" for change in search.changes)
        if not search.best.operations:
            return None
        made = expand(images.labeled, y, search.best, copies=copies, seed=seed)
        # the search only keeps operations that beat the policy without them, so what is left helped
        evidence = f"{search.best.describe()}: {search.best_score:.1%} vs {search.baseline_score:.1%} without"
        batch = SyntheticBatch("image augment", "augmented", search.best.version, images.featurize(made.x), made.y,
                               made.parents, made.x, True, evidence)
        return batch, image_expander(search.best)

    def _hallucinate(self, x, y, pool_x, pool_y, val_classes, judge, human_judged, seed):
        from metalabel.errors import NotEnoughDataError
        from metalabel.generate.hallucinate import hallucinate, train_hallucinator

        options = self.options
        # Trained on the pool's pseudo-classes only: were the human labels its tasks too, the judge
        # (held-out human labels) would score a generator that had seen the held-out labels. Its own
        # validation runs on the pseudo-classes set aside for judging (train_hallucinator keeps them out).
        try:
            trained = train_hallucinator(pool_x, pool_y, ways=5, shots=1, queries=5, extra_per_class=options.per_class,
                                         steps=options.hallucinator_steps, seed=seed, val_episodes=50,
                                         val_classes=val_classes if len(val_classes) >= 5 else None)
        except NotEnoughDataError:
            return None  # too few classes with enough examples for episodes yet; a wrong option still stops the run

        def expander(train_x, train_y, fold_seed):
            made = hallucinate(trained, train_x, train_y, per_class=options.per_class, seed=fold_seed)
            return made.x, made.y

        made = hallucinate(trained, x, y, per_class=options.per_class, seed=seed)
        meta = (f"meta-validation {trained.val_accuracy_with:.1%} with vs {trained.val_accuracy_without:.1%} "
                f"without")
        if not options.learn:
            kept, evidence = True, f"{meta}; kept unjudged (feedback off)"
        elif judge is None:
            kept, evidence = trained.val_accuracy_with > trained.val_accuracy_without, meta
        else:
            score, reference = judge(expander), judge(None)
            # Held-out human labels are the evidence that counts: kept unless it lowers accuracy on them. The
            # meta-validation does not see the labeled items, and as a veto it dropped a hallucinator that
            # raised test accuracy by 3-17 points. Judged on pseudo-class episodes, it must raise accuracy.
            kept = score >= reference if human_judged else score > reference
            evidence = f"{meta}; held-out {score:.1%} vs {reference:.1%} without it"
        batch = SyntheticBatch("hallucinator", "generated", trained.version, made.x, made.y, made.parents, made.x,
                               kept, evidence)
        return batch, expander

    def _synthesize(self, images, judge, seed):
        from metalabel.generate.vae import sample_images, train_vae

        options = self.options
        # the classes with training images (accepted labels may not reach every class yet), numbered 0..k-1
        present, local_labels = np.unique(images.train_labels, return_inverse=True)
        if len(present) < 2 or images.train_images.shape[1:] != (28, 28):
            return None
        vae = self._vae
        if (vae is None or not np.array_equal(vae[2], present)
                or len(images.train_labels) >= options.vae_regrowth * vae[1]):
            vae = (train_vae(images.train_images, local_labels, classes=len(present), steps=options.vae_steps,
                             seed=seed, sample_weight=images.train_weights), len(images.train_labels), present)
            self._vae = vae
        trained = vae[0]
        local = np.repeat(np.arange(len(present)), options.per_class)
        labels = present[local]
        samples = sample_images(trained, local, seed=seed)
        features = images.featurize(samples)

        def expander(train_x, train_y, fold_seed):
            wanted = np.isin(labels, np.unique(train_y))
            return features[wanted], labels[wanted]

        if not options.learn:
            kept, evidence = True, "kept unjudged (feedback off)"
        else:
            score, reference = judge(expander), judge(None)
            kept = score > reference
            evidence = f"held-out {score:.1%} vs {reference:.1%} without it"
        batch = SyntheticBatch("vae", "generated", trained.version, features, labels, np.full(len(labels), -1),
                               samples, kept, evidence)
        return batch, expander

    def _feature_gan(self, pool_x, accepted, judge, seed):
        from metalabel.generate.gan import generate_features, train_feature_gan

        options = self.options
        present, local_labels = np.unique(accepted.classes, return_inverse=True)
        if len(present) < 2:
            return None
        gan = self._gan
        if (gan is None or not np.array_equal(gan[2], present) or gan[0].model.dim != pool_x.shape[1]
                or len(accepted.classes) >= options.vae_regrowth * gan[1]):
            gan = (train_feature_gan(pool_x[accepted.positions], local_labels, classes=len(present),
                                     steps=options.gan_steps, seed=seed), len(accepted.classes), present)
            self._gan = gan
        trained = gan[0]
        local = np.repeat(np.arange(len(present)), options.per_class)
        labels = present[local]
        features = generate_features(trained, local, seed=seed)

        def expander(train_x, train_y, fold_seed):
            wanted = np.isin(labels, np.unique(train_y))
            return features[wanted], labels[wanted]

        return _judged_batch("gan", trained.version, features, labels, features, expander, judge, options.learn)

    def _bayesnet(self, x, y, pool_x, accepted, judge, seed):
        """Refitted on each judging fold's rows (cheap), so the human labels it is judged by are not in it."""
        from metalabel.generate.bayesnet import fit_bayesnet, sample_bayesnet

        options = self.options
        extra_x = pool_x[:0] if accepted is None else pool_x[accepted.positions]
        extra_y = y[:0] if accepted is None else accepted.classes

        def fitted(train_x, train_y):
            return fit_bayesnet(np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y]))

        def make(net, train_y, make_seed):
            labels = np.repeat(np.unique(train_y), options.per_class)
            return sample_bayesnet(net, labels, seed=make_seed).astype(x.dtype), labels

        def expander(train_x, train_y, fold_seed):
            return make(fitted(train_x, train_y), train_y, fold_seed)

        net = fitted(x, y)
        rows, labels = make(net, y, seed)
        return _judged_batch("bayesnet", net.version, rows, labels, rows, expander, judge, options.learn)


def _judged_batch(generator: str, version: str, features: np.ndarray, labels: np.ndarray, content: np.ndarray,
                  expander: Expander, judge, learn: bool) -> tuple[SyntheticBatch, Expander]:
    """A whole-class generator's batch: kept if its rows raise held-out accuracy (unjudged without ``learn``)."""
    if not learn:
        kept, evidence = True, "kept unjudged (feedback off)"
    else:
        score, reference = judge(expander), judge(None)
        kept = score > reference
        evidence = f"held-out {score:.1%} vs {reference:.1%} without it"
    return SyntheticBatch(generator, "generated", version, features, labels, np.full(len(labels), -1), content, kept,
                          evidence), expander


def _judged_classes(pool_y: np.ndarray, *, share: float, seed: int) -> np.ndarray:
    """The pseudo-labels of a random ``share`` of the pseudo-classes, -1 elsewhere: the classes kept for judging."""
    classes = np.unique(pool_y[pool_y >= 0])
    judged = np.random.default_rng(seed).permutation(classes)[:round(len(classes) * share)]
    return np.where(np.isin(pool_y, judged), pool_y, -1)


def _combined(expanders: list[Expander]) -> Expander:
    def make(train_x, train_y, seed):
        made = [expander(train_x, train_y, seed) for expander in expanders]
        return np.concatenate([m[0] for m in made]), np.concatenate([m[1] for m in made])
    return make


def _policy_expander(policy: AugmentationPolicy, copies: int) -> Expander:
    def make(train_x, train_y, seed):
        if not policy.operations:
            return train_x[:0], train_y[:0]
        made = expand(train_x, train_y, policy, copies=copies, seed=seed)
        return made.x, made.y
    return make


def _rows_of(subset: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Row numbers in ``whole`` of each row of ``subset`` (the judge passes rows of the labeled features)."""
    index = {row.tobytes(): i for i, row in enumerate(whole)}
    return np.array([index[row.tobytes()] for row in subset], dtype=np.int64)
