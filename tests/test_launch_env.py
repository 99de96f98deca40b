"""The launcher record from SLURM, torchrun, the deepspeed launcher and a single process."""

from __future__ import annotations

import socket

import pytest

from fe_train.errors import UserError
from fe_train.launch.env import check_device, cuda_device_index, expand_hostlist, from_environ, slurm_port


def test_single_process():
    env = from_environ({})
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (0, 1, 0, "single")


def test_torchrun():
    env = from_environ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "n1", "MASTER_PORT": "1234", "TORCHELASTIC_RUN_ID": "x"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 8, 1, 2)
    assert (env.master_addr, env.master_port, env.launcher) == ("n1", 1234, "torchrun")


def test_deepspeed_launcher():
    env = from_environ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    assert env.launcher == "deepspeed" and env.rank == 1 and env.local_world_size == 2


def test_srun_task():
    env = from_environ({
        "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_STEP_ID": "0",
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08,10],cpu1", "SLURM_TASKS_PER_NODE": "2(x3),2",
        "SLURM_NODEID": "2",
    })
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size) == (5, 1, 8, 2)
    assert env.master_addr == "gpu07" and env.master_port == slurm_port("4242") and env.launcher == "slurm"


def test_batch_script_itself_is_not_a_rank():
    # Inside the sbatch script (no srun step) SLURM_PROCID is set but this is no training task.
    env = from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "1"})
    assert env.launcher == "single" and env.world_size == 1


def test_torchrun_inside_slurm_wins():
    env = from_environ({"RANK": "2", "WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "j", "SLURM_PROCID": "0",
                        "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"})
    assert env.launcher == "torchrun" and env.rank == 2 and env.world_size == 4


@pytest.mark.parametrize("hostlist, hosts", [
    ("node1", ["node1"]),
    ("node[1-3]", ["node1", "node2", "node3"]),
    ("gpu[001-002,010],login", ["gpu001", "gpu002", "gpu010", "login"]),
    ("a[1-2]-ib,b3", ["a1-ib", "a2-ib", "b3"]),
])
def test_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


def test_ports_differ_between_jobs():
    assert slurm_port("100") != slurm_port("101")
    assert 20000 <= slurm_port("999999") < 40000


def test_record_names_host_and_its_address():
    # The address the host name resolves to is what gloo/NCCL advertise: 127.0.0.1 breaks multi-node runs.
    env = from_environ({})
    assert env.host_addr == socket.gethostbyname(socket.gethostname())
    assert f"on {env.hostname} ({env.host_addr}) via single" in env.describe()


SRUN_TASK_3 = {"SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_NTASKS": "8", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "7",
               "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_NODEID": "0"}


@pytest.mark.parametrize("mode, visible, device", [
    ("every GPU of the node visible", 4, 3),
    ("srun --gpus-per-task=1 / --gpu-bind=single:1 / map_gpu", 1, 0),
    ("--gpu-bind=closest: two of four visible", 2, 1),
])
def test_local_rank_exported_is_the_visible_device_deepspeed_opens(mode, visible, device):
    """DeepSpeed opens CUDA device LOCAL_RANK: under one GPU per task, task 3 must ask for device 0, not 3."""
    launch = from_environ(SRUN_TASK_3)
    assert cuda_device_index(launch.local_rank, visible) == device, mode
    assert launch.exported(cuda_device_index(launch.local_rank, visible))["LOCAL_RANK"] == str(device)
    assert launch.exported()["LOCAL_RANK"] == "3"  # on CPU: the place on the node


@pytest.mark.parametrize("environ, message", [
    ({"SLURM_GPUS_ON_NODE": "4"}, "GPUs expected (SLURM_GPUS_ON_NODE=4) but torch finds no CUDA device"),
    ({"SLURM_GPUS_PER_NODE": "h100:8"}, "GPUs expected (SLURM_GPUS_PER_NODE=h100:8) but torch finds no CUDA device"),
    ({"DS_ACCELERATOR": "cuda"}, "GPUs expected (DS_ACCELERATOR=cuda) but torch finds no CUDA device"),
])
def test_no_cuda_where_gpus_were_asked_for_is_one_line(environ, message):
    with pytest.raises(UserError) as caught:
        check_device(False, environ)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_cpu_deepspeed_beside_cuda_torch_is_one_line():
    with pytest.raises(UserError, match=r"^DS_ACCELERATOR=cpu but torch finds CUDA devices: .* unset DS_ACCELERATOR$"):
        check_device(True, {"DS_ACCELERATOR": "cpu"})


@pytest.mark.parametrize("environ", [{}, {"DS_ACCELERATOR": "cpu"}, {"SLURM_GPUS_ON_NODE": "0"}, {"SLURM_GPUS_PER_NODE": "0"}])
def test_cpu_runs_where_no_gpu_was_asked_for(environ):
    check_device(False, environ)
    check_device(True, {k: v for k, v in environ.items() if k != "DS_ACCELERATOR"})


def test_a_single_process_rendezvous_does_not_take_a_port_in_use():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 29500))  # the default of torchrun and the deepspeed launcher, taken
        held.listen()
        env = from_environ({})
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", env.master_port))  # free: the rendezvous can listen on it
    assert env.master_port != 29500 and from_environ({"MASTER_PORT": "1234"}).master_port == 1234
