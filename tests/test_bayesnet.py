"""The Bayesian-network table generator, on scikit-learn's bundled tables: structure, samples, the engine's verdict."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from metalabel.errors import BadInputError
from metalabel.generate.bayesnet import fit_bayesnet, sample_bayesnet
from metalabel.generate.engine import AcceptedRows, DataGenerator, GeneratorOptions


def test_the_tree_links_columns_that_depend_on_each_other_given_the_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    first = rng.normal(size=400) + 2 * y
    x = np.stack([first, first + 0.05 * rng.normal(size=400), rng.normal(size=400), rng.normal(size=400) - y], 1)
    net = fit_bayesnet(x, y)
    assert (0, 1) in net.edges() and len(net.edges()) == 3  # a tree over 4 columns, the near-copy linked
    assert [table.shape[0] for table in net.tables] == [2] * 4  # the class is a parent of every column
    made = sample_bayesnet(net, np.repeat([0, 1], 200), seed=0)
    # the dependence survives sampling: the near-copy follows its column within a bin or two
    assert np.corrcoef(made[:, 0], made[:, 1])[0, 1] > 0.8
    assert abs(np.corrcoef(made[:, 2], made[:, 3])[0, 1]) < 0.3


@pytest.mark.parametrize("load", [load_wine, load_breast_cancer])
def test_rows_of_a_class_look_like_that_class_to_a_classifier_of_real_rows(load):
    x, y = load(return_X_y=True)
    net = fit_bayesnet(x, y)
    wanted = np.repeat(np.unique(y), 100)
    made = sample_bayesnet(net, wanted, seed=1)
    assert made.shape == (len(wanted), x.shape[1])
    assert (made >= x.min(0)).all() and (made <= x.max(0)).all()  # within the columns' observed ranges
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    assert (classifier.predict(made) == wanted).mean() >= 0.85
    for c in np.unique(y):  # each class's column means land near the real ones
        gap = np.abs(made[wanted == c].mean(0) - x[y == c].mean(0)) / x.std(0)
        assert gap.max() < 0.5


def test_columns_with_few_values_keep_them_and_a_seed_fixes_the_rows():
    x, y = load_digits(return_X_y=True)  # pixel counts 0..16, many columns nearly constant
    net = fit_bayesnet(x[:600], y[:600], bins=5)
    made = sample_bayesnet(net, np.repeat(np.arange(10), 20), seed=3)
    few_valued = [column for column in range(x.shape[1]) if len(np.unique(x[:600, column])) <= 5]
    assert few_valued, "digits has nearly constant pixel columns; the check below needs some"
    for column in few_valued:
        assert np.isin(made[:, column], x[:600, column]).all()
    np.testing.assert_array_equal(made, sample_bayesnet(net, np.repeat(np.arange(10), 20), seed=3))
    assert fit_bayesnet(x[:600], y[:600], bins=5).version == net.version != fit_bayesnet(x[:599], y[:599]).version


def test_bad_input_names_the_row_or_class():
    x, y = load_wine(return_X_y=True)
    broken = x.copy()
    broken[12, 3] = np.nan
    with pytest.raises(BadInputError, match="row 12"):
        fit_bayesnet(broken, y)
    net = fit_bayesnet(x[y < 2], y[y < 2])
    with pytest.raises(BadInputError, match="class 2") as error:
        sample_bayesnet(net, np.array([0, 1, 2]), seed=0)
    assert "row 2" in str(error.value)
    with pytest.raises(BadInputError, match=r"one class id per row of x \(\d+\)"):
        fit_bayesnet(x, y[:-1])


@pytest.fixture(scope="module")
def wine_round():
    """Wine as the loop sees a table: standardized columns, 5 human labels per class, the rest the pool."""
    x, y = load_wine(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    rng = np.random.default_rng(0)
    human = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(3)])
    accepted = np.setdiff1d(np.arange(len(y)), human)[::3]
    return x, y, human, AcceptedRows(positions=accepted, classes=y[accepted])


def test_the_engine_judges_the_network_on_tables_and_records_where_its_rows_came_from(wine_round):
    x, y, human, accepted = wine_round
    options = GeneratorOptions(augment=False, hallucinate=False)
    pseudo = np.repeat(np.arange(len(y) // 6 + 1), 6)[:len(y)]
    result = DataGenerator(options).step(x[human], y[human], pool_x=x, pool_y=pseudo, accepted=accepted,
                                         table=True, seed=0)
    (batch,) = result.batches
    assert batch.generator == "bayesnet" and batch.kind == "generated" and len(batch.version) == 12
    assert batch.x.shape == (15, 13) and batch.x.dtype == np.float32 and (batch.parents == -1).all()
    assert "held-out" in batch.evidence and any(line.startswith("Bayesian network") for line in result.feedback)
    assert (len(result.expanders) == 1) == batch.kept
    # not a table: the network is not run
    assert not DataGenerator(options).step(x[human], y[human], pool_x=x, pool_y=pseudo, seed=0).batches
    # feedback off: kept unjudged
    unjudged = DataGenerator(GeneratorOptions(augment=False, hallucinate=False, learn=False)).step(
        x[human], y[human], pool_x=x, pool_y=pseudo, table=True, seed=0)
    assert unjudged.batches[0].kept and "unjudged" in unjudged.batches[0].evidence


def test_the_engine_trains_the_gan_on_accepted_rows_only_and_judges_it(wine_round):
    x, y, human, accepted = wine_round
    options = GeneratorOptions(augment=False, hallucinate=False, bayesnet=False, gan=True, gan_steps=20)
    pseudo = np.repeat(np.arange(len(y) // 6 + 1), 6)[:len(y)]
    generator = DataGenerator(options)
    result = generator.step(x[human], y[human], pool_x=x, pool_y=pseudo, accepted=accepted, seed=0)
    (batch,) = result.batches
    assert batch.generator == "gan" and batch.kind == "generated" and (batch.parents == -1).all()
    assert batch.x.shape == (15, 13) and "held-out" in batch.evidence
    # one human label per class: nothing held out to judge by, so with feedback on it is not trained
    first = DataGenerator(options).step(x[human[::5]], y[human[::5]], pool_x=x, pool_y=pseudo, accepted=accepted,
                                        seed=0)
    assert not first.batches and any("GAN not trained" in line for line in first.feedback)


def test_the_loop_runs_the_network_on_a_table_and_gives_the_gan_its_accepted_rows_only_when_asked(tmp_path):
    from sklearn.datasets import load_wine

    import metalabel as ml
    from metalabel.datasets import gold_labels, seed_labels_from_pool
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.pipeline import LabelingRun, RunOptions
    from metalabel.project import Project

    bunch = load_wine()
    pool = ml.LabeledDataset(name="wine", modality="tabular", items=bunch.data.astype(np.float32),
                             labels=bunch.target.astype(np.int64), class_names=list(bunch.target_names),
                             uris=[f"wine/{i}" for i in range(len(bunch.target))])
    for gan in (False, True):
        folder = tmp_path / f"gan-{gan}"
        with Project.create(folder, pool=pool, labels=seed_labels_from_pool(pool, per_class=5, seed=0)) as project:
            run = LabelingRun(project.store, project.load_pool(), None, oracle=SimulatedOracle(gold_labels(pool)),
                              progress=False, options=RunOptions(budget=0, project_meta_steps=0, gan=gan))
            [report] = run.run().rounds
        assert run.generator is not None and run.generator.options.gan is gan
        # the network ran on the table's columns; the GAN waits for accepted rows (none without answers)
        assert report.generation is not None
        assert "bayesnet" in report.generation.generators and "gan" not in report.generation.generators
