"""``python -m fe_train ...`` is ``fe-train ...`` (for torchrun and the deepspeed launcher's --module)."""

from fe_train.cli import main

main()
