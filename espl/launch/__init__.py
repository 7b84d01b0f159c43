"""Placement of a run's processes on a Ray cluster (`espl-bench launch`; the optional `ray` extra).

One placement group holds a bundle per part: each vLLM server, the trainer (`torchrun` over
its GPUs), and the retrieval server. Each part is a Ray actor that runs the project's own
command (`serve-vllm`, `retriever serve`, `run` or `compare`) as a subprocess on the GPUs Ray
gave it. Ray only places and supervises: no data goes through it.

- `parts`: what runs where, and the bundles it needs (no Ray import);
- `host`: the actor that runs one part's process, on whichever node Ray put it;
- `cluster`: the placement group, the start order, health waits, logs and teardown.
"""
