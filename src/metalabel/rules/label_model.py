"""The label model: the rules' votes combined, each rule weighted by how often it is right.

Dawid and Skene (1979): every item has a hidden true class y with prior pi; rule l,
given y = j, casts outcome o (a class, or abstains) with probability C_l[j, o], independent
of the other rules given y. EM alternates the posterior over y for every item (E) with
pi and every C_l from those posteriors (M). Abstaining is an outcome of its own: a
keyword rule votes for one class only, and what tells it apart from noise is that it
fires on that class far more often than on the others (with abstentions treated as
missing, a one-class rule would look always right). Items a person labeled are anchors:
their posterior is fixed to that label (semi-supervised EM), which ties the hidden
classes to the project's names and lends the estimate the people's evidence.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.special import logsumexp

from metalabel.errors import BadInputError
from metalabel.rules.functions import ABSTAIN_INDEX


class LabelModel:
    """Dawid-Skene EM over a votes matrix ``[N, m]`` (class indices, ``ABSTAIN_INDEX`` = -1).

    ``smoothing`` is the weight, in items, of a prior that pulls each rule's per-class
    vote distribution towards its overall one (a rule that says nothing about the class);
    it keeps rare classes' rows from going to exact zeros. Fitted: ``prior_`` [K],
    ``confusion_`` [m, K, K+1] (last column: abstain), ``n_iter_``, ``converged_``.
    """

    def __init__(self, classes: int, *, smoothing: float = 1.0, max_iter: int = 200, tol: float = 1e-6) -> None:
        self.classes = classes
        self.smoothing = smoothing
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, votes: np.ndarray, *, anchors: np.ndarray | None = None,
            anchor_classes: np.ndarray | None = None) -> LabelModel:
        """EM; ``anchors`` (rows of ``votes``) keep ``anchor_classes`` as their class.

        Two starts: each item's share of votes per class (majority vote), and, with
        anchors, the rules' behaviour on the anchored items alone. The fit with the higher
        likelihood is kept: a few anchors cannot pull a majority-vote start out of a wrong
        optimum (rules that agree on the wrong class), but they decide between the two.
        """
        if self.classes < 2:
            raise BadInputError(f"a label model needs at least 2 classes, got {self.classes}")
        outcomes = self._one_hot(votes)
        k = self.classes
        anchors = np.zeros(0, np.int64) if anchors is None else np.asarray(anchors, dtype=np.int64)
        anchor_classes = np.zeros(0, np.int64) if anchor_classes is None else np.asarray(anchor_classes, np.int64)
        if len(anchors) != len(anchor_classes):
            raise BadInputError(f"{len(anchors)} anchors but {len(anchor_classes)} anchor classes")
        fixed = np.zeros((len(anchors), k))
        fixed[np.arange(len(anchors)), anchor_classes] = 1.0
        # each rule's overall outcome frequencies: what the smoothing pulls towards
        self._marginal = np.asarray(outcomes.mean(0)).reshape(votes.shape[1], k + 1)
        shares = (outcomes @ self._class_of_outcome(votes.shape[1])).toarray() + 0.1
        starts = [shares / shares.sum(1, keepdims=True)]
        if len(anchors):
            only_anchors = np.zeros_like(starts[0])  # the free items weigh nothing in the first M-step
            starts.append(only_anchors)
        best: tuple[float, np.ndarray, np.ndarray, int, bool] | None = None
        for posterior in starts:
            posterior[anchors] = fixed
            fitted = self._em(outcomes, posterior, anchors, fixed)
            if best is None or fitted[0] > best[0]:
                best = fitted
        assert best is not None
        _, self.prior_, self.confusion_, self.n_iter_, self.converged_ = best
        return self

    def _em(self, outcomes: sparse.csr_matrix, posterior: np.ndarray, anchors: np.ndarray,
            fixed: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, int, bool]:
        """EM from ``posterior``: (log-likelihood, prior, confusion, iterations, converged)."""
        free = np.ones(len(posterior), dtype=bool)
        free[anchors] = False
        log_likelihood = -np.inf
        iterations, converged = 0, False
        while iterations < self.max_iter and not converged:
            iterations += 1
            self._m_step(outcomes, posterior)
            joint = self._log_joint(outcomes)
            previous, log_likelihood = log_likelihood, float(
                logsumexp(joint[free], axis=1).sum() + (joint[anchors] * fixed).sum())
            posterior = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
            posterior[anchors] = fixed
            converged = log_likelihood - previous < self.tol * len(posterior)
        self._m_step(outcomes, posterior)
        return log_likelihood, self.prior_, self.confusion_, iterations, converged

    def predict_log_proba(self, votes: np.ndarray) -> np.ndarray:
        """log P(y | the rules' votes) [N, K]."""
        joint = self._log_joint(self._one_hot(votes))
        return joint - logsumexp(joint, axis=1, keepdims=True)

    def predict_proba(self, votes: np.ndarray) -> np.ndarray:
        return np.exp(self.predict_log_proba(votes))

    @property
    def accuracy_(self) -> np.ndarray:
        """[m] each rule's estimated accuracy where it votes: P(vote = y | it votes)."""
        right = np.einsum("j,ljj->l", self.prior_, self.confusion_[:, :, : self.classes])
        fires = self.prior_ @ (1 - self.confusion_[:, :, self.classes]).T
        return right / np.maximum(fires, 1e-12)

    def _m_step(self, outcomes: sparse.csr_matrix, posterior: np.ndarray) -> None:
        k = self.classes
        self.prior_ = (posterior.sum(0) + 1.0) / (len(posterior) + k)
        rules = outcomes.shape[1] // (k + 1)
        counts = np.asarray(outcomes.T @ posterior).reshape(rules, k + 1, k).transpose(0, 2, 1)  # [m, K, K+1]
        counts = counts + self.smoothing * self._marginal[:, None, :] + 1e-9
        self.confusion_ = counts / counts.sum(2, keepdims=True)

    def _log_joint(self, outcomes: sparse.csr_matrix) -> np.ndarray:
        k = self.classes
        log_confusion = np.log(self.confusion_).transpose(0, 2, 1).reshape(-1, k)  # [m*(K+1), K]
        return np.asarray(outcomes @ log_confusion) + np.log(self.prior_)

    def _one_hot(self, votes: np.ndarray) -> sparse.csr_matrix:
        """[N, m*(K+1)]: one 1 per item and rule, at the rule's outcome (K: abstained)."""
        votes = np.asarray(votes)
        k = self.classes
        if votes.ndim != 2 or votes.dtype.kind not in "iu":
            raise BadInputError(f"votes must be a whole-number matrix [items, rules], got {votes.dtype} "
                                f"of shape {votes.shape}")
        if votes.size and (votes.min() < ABSTAIN_INDEX or votes.max() >= k):
            raise BadInputError(f"votes must be class indices 0..{k - 1} or {ABSTAIN_INDEX} (abstain)")
        n, rules = votes.shape
        outcome = np.where(votes == ABSTAIN_INDEX, k, votes)
        columns = (np.arange(rules) * (k + 1) + outcome).ravel()
        rows = np.repeat(np.arange(n), rules)
        return sparse.csr_matrix((np.ones(n * rules), (rows, columns)), shape=(n, rules * (k + 1)))

    def _class_of_outcome(self, rules: int) -> sparse.csr_matrix:
        """[m*(K+1), K]: maps a rule's outcome to the class it votes for (abstentions to none)."""
        k = self.classes
        rows = (np.arange(rules)[:, None] * (k + 1) + np.arange(k)).ravel()
        return sparse.csr_matrix((np.ones(rules * k), (rows, np.tile(np.arange(k), rules))),
                                 shape=(rules * (k + 1), k))
