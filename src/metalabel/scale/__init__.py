"""Running metalabel's heavy steps on a Ray cluster (``pip install 'metalabel[ray]'``).

Today this is the pool's embedding (:func:`embed_on_ray`): the items go through a
frozen encoder in parallel batches on the cluster's workers, each worker loading the
encoder once, and the result lands in the same content-keyed cache the single-process
run reads (``metalabel.data.encoders.embed_dataset``), so the labeling loop, the store
and the precision guarantee are exactly those of a run without Ray.

This room sits just below ``project``: it may use every room under it (data today; the
round model and meta-training once prediction and training run on Ray too), and only
``project`` and the command line call it. Ray is imported inside the functions, so a
core install never loads it.
"""

from metalabel.scale.embed import RayEmbedding, embed_on_ray

__all__ = ["RayEmbedding", "embed_on_ray"]
