"""Launcher environments (SLURM, torchrun, the deepspeed launcher, single process)."""

from fe_train.launch.env import LaunchEnv, from_environ

__all__ = ["LaunchEnv", "from_environ"]
