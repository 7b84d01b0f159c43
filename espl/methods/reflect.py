"""Self-reflection: a single lineage; each iteration the reflector rewrites the current prompt."""

from espl.methods import MethodSpec

METHOD = MethodSpec(
    name="reflect",
    description="single-lineage self-reflection (mutation only), frozen weights",
    train_weights=False,
    evolve=False,
    single_lineage=True,
)
