"""Which items a round asks about: the reference sample is random and reproducible, the rest by the strategy."""

from __future__ import annotations

import numpy as np

from metalabel.label.ask import LABEL_ISSUE, REFERENCE, choose_questions, confident_region


def pool(n=200, ways=4, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(ways), size=n)
    return probs, rng.normal(size=(n, 8))


def test_reference_questions_are_a_seeded_uniform_draw_from_the_candidates_only():
    probs, embeddings = pool()
    candidates = np.arange(50, 200)
    ask = dict(reference=6, active=4, strategy="margin", human_positions=np.arange(0, 50),
               suspect_seeds=np.array([], dtype=np.int64))
    first = choose_questions(probs, embeddings, candidates, rng=np.random.default_rng(3), **ask)
    again = choose_questions(probs, embeddings, candidates, rng=np.random.default_rng(3), **ask)
    assert first == again  # same seed, same questions
    reference = [q.position for q in first if q.why == REFERENCE]
    active = [q.position for q in first if q.why == "margin"]
    assert len(reference) == 6 and len(active) == 4
    positions = [q.position for q in first]
    assert len(set(positions)) == 10 and set(positions) <= set(candidates.tolist())
    # uniform: over many draws every candidate is drawn about equally often, whatever its confidence
    counts = np.zeros(200)
    for seed in range(400):
        for q in choose_questions(probs, embeddings, candidates, rng=np.random.default_rng(seed), **ask):
            if q.why == REFERENCE:
                counts[q.position] += 1
    expected = 400 * 6 / 150
    assert counts[:50].sum() == 0
    assert abs(counts[50:].mean() - expected) < 1e-9 and counts[50:].std() < 0.5 * expected
    # not biased toward uncertain items the way margin sampling is
    margin = np.sort(probs, 1)[:, -1] - np.sort(probs, 1)[:, -2]
    assert abs(np.corrcoef(counts[50:], margin[50:])[0, 1]) < 0.3


def test_suspect_seeds_come_first_and_take_at_most_a_tenth_of_the_questions():
    probs, embeddings = pool()
    questions = choose_questions(probs, embeddings, np.arange(20, 200), reference=2, active=18,
                                 strategy="entropy", human_positions=np.arange(20),
                                 suspect_seeds=np.array([3, 5, 7, 9]), rng=np.random.default_rng(0))
    assert [q.why for q in questions[:2]] == [LABEL_ISSUE, LABEL_ISSUE]
    assert [q.position for q in questions[:2]] == [3, 5]
    assert len(questions) == 20 and sum(q.why == REFERENCE for q in questions) == 2
    # a round that goes all to the reference sample still asks about a suspect seed
    all_reference = choose_questions(probs, embeddings, np.arange(20, 200), reference=10, active=0,
                                     strategy="entropy", human_positions=np.arange(20),
                                     suspect_seeds=np.array([3, 5]), rng=np.random.default_rng(0))
    assert [q.why for q in all_reference].count(LABEL_ISSUE) == 1 and len(all_reference) == 10


def test_auto_strategy_is_typiclust_at_a_cold_start_then_margin():
    probs, embeddings = pool()
    cold = choose_questions(probs, embeddings, np.arange(4, 200), reference=0, active=3, strategy="auto",
                            human_positions=np.arange(4), suspect_seeds=np.array([], dtype=np.int64),
                            rng=np.random.default_rng(0))
    warm = choose_questions(probs, embeddings, np.arange(8, 200), reference=0, active=3, strategy="auto",
                            human_positions=np.arange(8), suspect_seeds=np.array([], dtype=np.int64),
                            rng=np.random.default_rng(0))
    assert {q.why for q in cold} == {"typiclust"} and {q.why for q in warm} == {"margin"}


def test_fewer_candidates_than_questions_asks_each_once():
    probs, embeddings = pool(n=10)
    questions = choose_questions(probs, embeddings, np.arange(5, 10), reference=3, active=5, strategy="margin",
                                 human_positions=np.arange(5), suspect_seeds=np.array([], dtype=np.int64),
                                 rng=np.random.default_rng(0))
    assert sorted(q.position for q in questions) == [5, 6, 7, 8, 9]


def test_region_draws_are_uniform_over_the_region_and_the_rest_over_every_candidate():
    probs, embeddings = pool()
    candidates = np.arange(50, 200)
    region = np.arange(150, 200)
    ask = dict(reference=6, active=2, strategy="margin", human_positions=np.arange(0, 50),
               suspect_seeds=np.array([], dtype=np.int64), region=region, from_region=4)
    counts = {True: np.zeros(200), False: np.zeros(200)}
    for seed in range(300):
        questions = choose_questions(probs, embeddings, candidates, rng=np.random.default_rng(seed), **ask)
        reference = [q for q in questions if q.why == REFERENCE]
        assert len(reference) == 6 and len({q.position for q in questions}) == len(questions) == 8
        for q in reference:
            counts[q.from_region][q.position] += 1
    assert counts[True][:150].sum() == 0 and counts[True].sum() == 300 * 4
    assert counts[True][150:].std() < 0.5 * counts[True][150:].mean()  # uniform inside the region
    assert counts[False][50:150].sum() > 0.6 * counts[False].sum()  # the rest from all candidates


def test_the_confident_region_is_the_run_a_calibrated_model_expects_to_certify_widened():
    confidence = np.array([0.99, 0.5, 0.97, 0.95, 0.2, 0.9, 0.96])
    # most confident first: 0.99 0.97 0.96 ... running means 0.99 0.98 0.973: halfway to 1 from 0.95 is 0.975
    assert confident_region(confidence, 0.95, margin=1.0).tolist() == [0, 2]
    assert confident_region(confidence, 0.95, margin=1.5).tolist() == [0, 2, 6]
    assert confident_region(confidence, 0.999).size == 0
