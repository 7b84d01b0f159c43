"""GEPA as a prompt-optimization baseline, run through the `gepa` package under our budget.

- `adapter`: the `GEPAAdapter` (candidate = `{"system_prompt": text}`, one rollout per
  metric call, env reward as the score) and the budget ledger protocol.
- `feedback`: the reflective records GEPA's reflection model reads (env `info` as text).
- `reflection`: GEPA's reflection model served by our `Reflector`.
- `recorder`: candidates, windows, metrics and evaluations written to the run directory.
- `settings`: GEPA's arguments, its budget in our units, the train/validation split.

The method itself, which wires these to a run, is `espl.methods.gepa`.

Heavy imports (`gepa`, engines) happen only when a submodule is imported.
"""
