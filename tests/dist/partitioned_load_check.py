"""2-rank check of fe_train.engine.partitioned_load: weights equal the files, tied embeddings stay one
parameter, a rank holds only its slice, and the logits equal those of a plain (unpartitioned) load;
in bf16 too, at positions far into a long context (the rotary buffers are the checkpoint's, in fp32).

    torchrun --nproc_per_node 2 tests/dist/partitioned_load_check.py LLM_DIR REPORT.json LONG_LLM_DIR
"""

import json
import sys

import deepspeed
import torch
from safetensors.torch import load_file

from fe_train.config import Config
from fe_train.engine import ds_config
from fe_train.engine.build import init_distributed
from fe_train.engine.partitioned_load import load_causal_lm
from fe_train.launch.env import from_environ
from fe_train.model.frozen_llm import load_llm

path, report, long_path = sys.argv[1:4]
launch = from_environ()
cfg = Config.load(None, ["engine.ds_config=ds_configs/zero3_tiny.json", "train.precision=fp32",
                         "train.global_batch_size=2", "train.micro_batch_size=1"])
init_distributed(launch, cfg)
llm = load_causal_lm(path, ds_config.resolve(cfg, launch.world_size), torch.float32, launch.rank)
plain = load_llm(path, torch.float32)
disk = load_file(f"{path}/model.safetensors")
held = sum(p.ds_tensor.numel() for p in llm.parameters())
total = sum(p.ds_numel for p in llm.parameters())
params = list(llm.parameters())
ids = torch.arange(3, 40).reshape(1, -1) % plain.config.vocab_size
with torch.no_grad(), deepspeed.zero.GatheredParameters(params):
    unequal = [name for name, p in llm.named_parameters() if not torch.equal(p.data, disk[name])]
    tied = llm.get_input_embeddings().weight is llm.get_output_embeddings().weight
    logits_diff = (llm(ids).logits - plain(ids).logits).abs().max().item()
bf16 = Config.load(None, ["engine.ds_config=ds_configs/zero3_tiny.json", "train.precision=bf16",
                          "train.global_batch_size=2", "train.micro_batch_size=1"])
long_llm = load_causal_lm(long_path, ds_config.resolve(bf16, launch.world_size), torch.bfloat16, launch.rank)
long_plain = load_llm(long_path, torch.bfloat16)
positions = long_plain.config.max_position_embeddings
long_ids = (torch.arange(positions).reshape(1, -1) * 7) % long_plain.config.vocab_size
buffers = {name: (buf.dtype, torch.equal(buf, dict(long_plain.named_buffers())[name])) for name, buf in long_llm.named_buffers()}
with torch.no_grad(), deepspeed.zero.GatheredParameters(list(long_llm.parameters())):
    bf16_diff = (long_llm(long_ids).logits.float() - long_plain(long_ids).logits.float()).abs().max().item()
if launch.rank == 0:
    with open(report, "w") as stream:
        json.dump({"unequal": unequal, "tied": tied, "logits_diff": logits_diff, "held": held, "total": total, "count": len(params),
                   "trainable": sum(p.requires_grad for p in params), "training": llm.training,
                   "bf16_logits_diff": bf16_diff, "bf16_positions": positions,
                   "bf16_buffers": {name: [str(dtype), same] for name, (dtype, same) in buffers.items()}}, stream)
torch.distributed.destroy_process_group()
