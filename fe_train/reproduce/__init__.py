"""The paper's recipe (``docs/reproduce.md`` steps 2-13) as one pipeline: a step table built from one pipeline config
(``configs/pipeline/*.yaml``), run as chained Slurm jobs or in order in this shell, resumable through per-step markers.
``slurm/reproduce.sh`` is its command line."""
