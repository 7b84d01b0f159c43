"""Registers the built-in search-QA environments (imported by `envs.registry.load_all`)."""

from __future__ import annotations

from envs.registry import register

ENTRY_POINT = "envs.search.env:SearchEnv"

# (env id, CLI alias, dataset name in `envs.search.datasets.DATASETS`, description)
SEARCH_ENVS = (
    ("espl/HotpotQA-v0", "hotpotqa", "hotpotqa", "HotpotQA multi-hop QA with search (500 test questions)"),
    ("espl/HotpotQA-Small-v0", "hotpotqa-small", "hotpotqa_small",
     "HotpotQA, 196 train / 64 test: E-SPL's search split sizes, HotpotQA only (the paper's mix adds NQ)"),
    ("espl/HotpotQA-Comparison-v0", "hotpotqa-comparison", "hotpotqa_comparison", "HotpotQA comparison questions"),
    ("espl/2WikiMultiHopQA-v0", "2wiki", "2wiki", "2WikiMultiHopQA multi-hop QA with search"),
    ("espl/MuSiQue-v0", "musique", "musique", "MuSiQue-Ans multi-hop QA with search"),
    ("espl/Bamboogle-v0", "bamboogle", "bamboogle", "Bamboogle compositional questions with search"),
    ("espl/NQ-v0", "nq", "nq", "Natural Questions (open) with search"),
    ("espl/TriviaQA-v0", "triviaqa", "triviaqa", "TriviaQA with search"),
    ("espl/PopQA-v0", "popqa", "popqa", "PopQA long-tail entity questions with search"),
)

for env_id, alias, dataset, description in SEARCH_ENVS:
    register(env_id, ENTRY_POINT, alias=alias, kwargs={"dataset": dataset}, kind="search", description=description)
