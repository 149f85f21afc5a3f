"""The project's demo (``nox -s demo``): the PPO CartPole comparison of ``train_ppo_cartpole.py``.

Arguments are passed through, e.g. ``nox -s demo -- --timesteps 5000``.
"""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("train_ppo_cartpole.py")), run_name="__main__")
