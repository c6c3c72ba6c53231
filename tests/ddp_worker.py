"""Run under torchrun by tests/test_ddp.py: train with the given flags, then write a digest of this process's
parameters to FOLDER/rank<N>.txt, so that the test can compare the processes' copies of the model.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py FOLDER <training flags>
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from nanogpt_lib.config import parse_train_args
from nanogpt_lib.train import Trainer

if __name__ == "__main__":
    folder, flags = Path(sys.argv[1]), sys.argv[2:]
    trainer = Trainer(parse_train_args(flags, prog="ddp_worker", description="test worker"))
    trainer.run()
    digest = hashlib.sha256()
    for name, tensor in trainer.session.raw_model.state_dict().items():
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    (folder / f"rank{trainer.session.group.rank}.txt").write_text(digest.hexdigest())
