"""Generate data where the labeled set is thin, and keep only what held-out evidence says helps.

Light to import (no torch): augmentation policies (``augment``), their search
(``policy_search``) and the held-out judges (``evidence``). The learned generators load
torch and live in their own modules: ``hallucinate`` (a feature hallucinator meta-trained
through a prototype classifier), ``vae`` (a class-conditional VAE for 28x28 images), ``gan`` (a
conditional feature-generating WGAN-GP) and ``engine`` (one round of all of them, as the labeling
loop runs it). ``bayesnet`` (a class-conditional Bayesian network for table rows) is numpy only.
"""

from metalabel.generate.augment import (
    EMBEDDING_OPERATIONS,
    IMAGE_OPERATIONS,
    AugmentationPolicy,
    Augmented,
    Operation,
    augment_embeddings,
    augment_images,
    expand,
)
from metalabel.generate.policy_search import PolicySearch, default_candidates, held_out_score, search_policy

__all__ = [
    "EMBEDDING_OPERATIONS",
    "IMAGE_OPERATIONS",
    "AugmentationPolicy",
    "Augmented",
    "Operation",
    "PolicySearch",
    "augment_embeddings",
    "augment_images",
    "default_candidates",
    "expand",
    "held_out_score",
    "search_policy",
]
