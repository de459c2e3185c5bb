"""Run a few training steps on a prepared folder and print the per-step global CE as JSON.

Used by tests/test_train.py both as one process and under ``torchrun --nproc-per-node 2``;
dropout and router aux losses are off so the two runs must agree to float precision.
"""

import json
import sys

import torch

from trajmoe.city.data import CityData
from trajmoe.train.distributed import dist_info, maybe_init_distributed, shutdown_distributed
from trajmoe.train.fit import TrainConfig, fit
from trajmoe.train.models import new_trajmoe

if __name__ == "__main__":
    maybe_init_distributed()
    torch.set_num_threads(1)
    data = CityData(sys.argv[1])
    model, _ = new_trajmoe(d_model=32, n_layers=1, seed=0, dropout=0.0, router_aux_loss_coef=0.0,
                           router_z_loss_coef=0.0, n_heads=2)
    res = fit(model, [data], TrainConfig(max_steps=4, batch_size=8, epochs=5, seed=0, warmup_steps=1))
    if dist_info()[0] == 0:
        print("LOSSES " + json.dumps(res.losses))
    shutdown_distributed()
